/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-bench-engine-ops: operations per second of key generation and
 * signing through the engine API for one address prefix, and, with
 * --native-openssl, the same operations called directly through OpenSSL EVP
 * (the software drivers' native path; --native-openssl-only: that alone).
 * --only TYPE runs one key type (p256, p384, rsa2048).
 *
 * Output: one tab-separated row per measurement,
 *   <driver> <operation> <engine|native> <ops_per_sec> <peak_rss_kib>
 * bench/run-engine-ops.sh turns the rows into a table with ratios.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include <estc/engine.h>

#include "bench.h"

static const struct {
    estc_key_type type;
    const char *name;
    const char *alg;
    const char *param;
    estc_sig_alg sig;
} types[] = {
    {ESTC_KEY_EC_P256, "p256", "EC", "P-256", ESTC_SIG_ECDSA},
    {ESTC_KEY_EC_P384, "p384", "EC", "P-384", ESTC_SIG_ECDSA},
    {ESTC_KEY_RSA_2048, "rsa2048", "RSA", NULL, ESTC_SIG_RSA_PKCS1},
};

static void row(const char *driver, const char *op, const char *type, const char *path, int n,
                double secs)
{
    printf("%s\t%s-%s\t%s\t%.1f\t%ld\n", driver, op, type, path, secs > 0 ? n / secs : 0.0,
           bench_maxrss_kb());
}

static int bench_engine(estc_ctx *ctx, const char *prefix, const char *driver, int keygens,
                        int signs)
{
    uint8_t digest[32];
    memset(digest, 0x5a, sizeof(digest));
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        if (!bench_type_on(types[t].name))
            continue;
        int n = types[t].type == ESTC_KEY_RSA_2048 ? (keygens + 4) / 5 : keygens;
        char name[64], *addr = NULL;
        /* Untimed, as the native programs open their token or TPM before
         * timing: the first use of a driver loads its plug-in and connects. */
        bool found = false;
        if (estc_address_derive(ctx, prefix, ESTC_OBJ_KEY, "bench-warm-up", &addr) != ESTC_OK)
            return 1;
        (void)estc_object_exists(ctx, addr, ESTC_OBJ_KEY, &found);
        free(addr);
        addr = NULL;
        double start = bench_now(), spent = 0;
        int made = 0;
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof(name), "bench-%s-%d", types[t].name, i);
            if (estc_address_derive(ctx, prefix, ESTC_OBJ_KEY, name, &addr) != ESTC_OK)
                return 1;
            double s = bench_now();
            estc_err err = estc_key_generate(ctx, addr, types[t].type);
            spent += bench_now() - s;
            if (err == ESTC_ERR_UNSUPPORTED) {
                free(addr);
                break;
            }
            if (err != ESTC_OK) {
                fprintf(stderr, "keygen: %s: %s\n", estc_strerror(err), estc_ctx_error_detail(ctx));
                free(addr);
                return 1;
            }
            made++;
            if (i + 1 < n)
                estc_key_remove(ctx, addr);
            free(addr);
            addr = NULL;
        }
        (void)start;
        if (made == 0)
            continue;
        row(driver, "keygen", types[t].name, "engine", made, spent);
        /* Sign with the last key made, then remove it. */
        snprintf(name, sizeof(name), "bench-%s-%d", types[t].name, made - 1);
        if (estc_address_derive(ctx, prefix, ESTC_OBJ_KEY, name, &addr) != ESTC_OK)
            return 1;
        estc_buf sig = {0};
        double s = bench_now();
        for (int i = 0; i < signs; i++) {
            if (estc_key_sign(ctx, addr, types[t].sig, ESTC_HASH_SHA256, digest, sizeof(digest),
                              &sig) != ESTC_OK) {
                fprintf(stderr, "sign: %s\n", estc_ctx_error_detail(ctx));
                break;
            }
        }
        row(driver, "sign", types[t].name, "engine", signs, bench_now() - s);
        estc_buf_free(&sig);
        estc_key_remove(ctx, addr);
        free(addr);
    }
    return 0;
}

static int bench_openssl(const char *driver, int keygens, int signs)
{
    uint8_t digest[32], sig[512];
    memset(digest, 0x5a, sizeof(digest));
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        if (!bench_type_on(types[t].name))
            continue;
        int n = types[t].type == ESTC_KEY_RSA_2048 ? (keygens + 4) / 5 : keygens;
        EVP_PKEY *key = NULL;
        double s = bench_now();
        for (int i = 0; i < n; i++) {
            EVP_PKEY_free(key);
            key = types[t].param != NULL
                      ? EVP_PKEY_Q_keygen(NULL, NULL, types[t].alg, types[t].param)
                      : EVP_PKEY_Q_keygen(NULL, NULL, types[t].alg, (size_t)2048);
            if (key == NULL)
                return 1;
        }
        row(driver, "keygen", types[t].name, "native", n, bench_now() - s);
        /* One signature is one whole call, context set-up included, as an
         * application signing now and then would do it. */
        s = bench_now();
        for (int i = 0; i < signs; i++) {
            size_t len = sizeof(sig);
            EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
            if (pctx == NULL || EVP_PKEY_sign_init(pctx) != 1 ||
                EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) != 1 ||
                EVP_PKEY_sign(pctx, sig, &len, digest, sizeof(digest)) != 1)
                return 1;
            EVP_PKEY_CTX_free(pctx);
        }
        row(driver, "sign", types[t].name, "native", signs, bench_now() - s);
        EVP_PKEY_free(key);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *prefix = NULL;
    int keygens = 50, signs = 500;
    int native = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--native-openssl") == 0)
            native = 1;
        else if (strcmp(argv[i], "--native-openssl-only") == 0)
            native = 2;
        else if (bench_count_arg(argc, argv, &i, &keygens, &signs))
            continue;
        else if (prefix == NULL && argv[i][0] != '-')
            prefix = argv[i];
        else {
            fprintf(stderr,
                    "usage: %s PREFIX [--keygens N] [--signs N] [--only TYPE] "
                    "[--native-openssl | --native-openssl-only]\n",
                    argv[0]);
            return 2;
        }
    }
    if (prefix == NULL || keygens < 1 || signs < 1) {
        fprintf(stderr, "usage: %s PREFIX [--keygens N] [--signs N] [--native-openssl]\n", argv[0]);
        return 2;
    }
    estc_ctx *ctx = NULL;
    if (estc_ctx_new(&ctx) != ESTC_OK)
        return 1;
    const struct estc_driver *drv = NULL;
    if (estc_engine_find(ctx, prefix, &drv) != ESTC_OK) {
        fprintf(stderr, "%s\n", estc_ctx_error_detail(ctx));
        estc_ctx_free(ctx);
        return 1;
    }
    /* Warm OpenSSL's provider caches so neither path pays the first fetch:
     * in the estc-only process too, where the first key generation paid
     * it alone (about 3 ms, a tenth of the mem: P-256 rate at 10 keys). */
    EVP_PKEY *warm = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY_free(warm);
    int rc = native == 2 ? 0 : bench_engine(ctx, prefix, drv->scheme, keygens, signs);
    if (rc == 0 && native)
        rc = bench_openssl(drv->scheme, keygens, signs);
    estc_ctx_free(ctx);
    return rc;
}
