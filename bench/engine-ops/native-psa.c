/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-bench-native-psa: the psa driver's native comparison. Generates
 * persistent keys and signs digests through the PSA Crypto API directly,
 * with the same key policies as the driver, and prints the rows
 *   psa <operation> native <ops_per_sec>
 * that bench/run-engine-ops.sh sets beside the engine's.
 *
 * Runs in the current folder, where mbed TLS keeps its files (psa.sh makes
 * it a private temporary one); removes every key it made.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <psa/crypto.h>

#include "bench.h"

/* Far from the engine's default ranges, so the two never meet. */
#define BENCH_KEY_ID 0x3ef00000u

static const struct {
    const char *name;
    psa_key_type_t type;
    size_t bits;
    psa_algorithm_t policy, sign;
} types[] = {
    {"p256", PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1), 256,
     PSA_ALG_ECDSA(PSA_ALG_ANY_HASH), PSA_ALG_ECDSA(PSA_ALG_SHA_256)},
    {"p384", PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1), 384,
     PSA_ALG_ECDSA(PSA_ALG_ANY_HASH), PSA_ALG_ECDSA(PSA_ALG_SHA_256)},
    {"rsa2048", PSA_KEY_TYPE_RSA_KEY_PAIR, 2048, PSA_ALG_RSA_PKCS1V15_SIGN(PSA_ALG_ANY_HASH),
     PSA_ALG_RSA_PKCS1V15_SIGN(PSA_ALG_SHA_256)},
};

static void row(const char *op, const char *type, int n, double secs)
{
    printf("psa\t%s-%s\tnative\t%.1f\t%ld\n", op, type, secs > 0 ? n / secs : 0.0,
           bench_maxrss_kb());
}

static psa_status_t generate(size_t t, psa_key_id_t id)
{
    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    mbedtls_svc_key_id_t made;
    psa_set_key_id(&a, mbedtls_svc_key_id_make(0, id));
    psa_set_key_lifetime(&a, PSA_KEY_LIFETIME_PERSISTENT);
    psa_set_key_usage_flags(&a, PSA_KEY_USAGE_SIGN_HASH | PSA_KEY_USAGE_VERIFY_HASH);
    psa_set_key_algorithm(&a, types[t].policy);
    psa_set_key_type(&a, types[t].type);
    psa_set_key_bits(&a, types[t].bits);
    psa_status_t st = psa_generate_key(&a, &made);
    psa_reset_key_attributes(&a);
    return st;
}

int main(int argc, char **argv)
{
    int keygens = 50, signs = 500;
    if (!bench_counts(argc, argv, &keygens, &signs))
        return 2;
    psa_status_t st = psa_crypto_init();
    if (st != PSA_SUCCESS) {
        fprintf(stderr, "psa_crypto_init: %d\n", (int)st);
        return 1;
    }
    uint8_t hash[32], sig[PSA_SIGNATURE_MAX_SIZE];
    memset(hash, 0x5a, sizeof(hash));
    int rc = 0;
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]) && rc == 0; t++) {
        if (!bench_type_on(types[t].name))
            continue;
        /* As the engine bench: fewer RSA keys, removal not timed. */
        int n = types[t].type == PSA_KEY_TYPE_RSA_KEY_PAIR ? (keygens + 4) / 5 : keygens;
        psa_key_id_t id = BENCH_KEY_ID + (psa_key_id_t)t;
        double spent = 0;
        for (int i = 0; i < n; i++) {
            double s = bench_now();
            st = generate(t, id);
            spent += bench_now() - s;
            if (st != PSA_SUCCESS) {
                fprintf(stderr, "psa_generate_key %s: %d\n", types[t].name, (int)st);
                return 1;
            }
            if (i + 1 < n)
                psa_destroy_key(mbedtls_svc_key_id_make(0, id));
        }
        row("keygen", types[t].name, n, spent);
        double s = bench_now();
        for (int i = 0; i < signs; i++) {
            size_t len = 0;
            st = psa_sign_hash(mbedtls_svc_key_id_make(0, id), types[t].sign, hash, sizeof(hash),
                               sig, sizeof(sig), &len);
            if (st != PSA_SUCCESS) {
                fprintf(stderr, "psa_sign_hash %s: %d\n", types[t].name, (int)st);
                rc = 1;
                break;
            }
        }
        if (rc == 0)
            row("sign", types[t].name, signs, bench_now() - s);
        psa_destroy_key(mbedtls_svc_key_id_make(0, id));
    }
    mbedtls_psa_crypto_free();
    return rc;
}
