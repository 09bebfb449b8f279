/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-bench-native-pkcs11: key generation and signing per second called
 * directly on a PKCS#11 module (dlopen, C_GenerateKeyPair, C_SignInit +
 * C_Sign), the baseline for the pkcs11 driver in bench/run-engine-ops.sh.
 *
 *   estc-bench-native-pkcs11 --module PATH --token LABEL --pin PIN
 *                            [--keygens N] [--signs N] [--only TYPE]
 *
 * Prints rows "pkcs11\t<operation>\tnative\t<ops_per_sec>\t<peak_rss_kib>". The key pairs
 * match the driver's (token, private, sensitive, not extractable); each is
 * destroyed after use, outside the timed part, as the engine side does.
 */
#include <p11-kit/pkcs11.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

static CK_FUNCTION_LIST *fn;
static CK_SESSION_HANDLE sess;

static int check(CK_RV rv, const char *call)
{
    if (rv != CKR_OK) {
        fprintf(stderr, "native-pkcs11: %s: 0x%lx\n", call, (unsigned long)rv);
        return 1;
    }
    return 0;
}

static const CK_BYTE oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const CK_BYTE oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
/* DigestInfo prefix of SHA-256 for CKM_RSA_PKCS. */
static const CK_BYTE sha256_prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                        0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};

static const struct {
    const char *name;
    const CK_BYTE *oid;
    size_t oid_len;
} types[] = {
    {"p256", oid_p256, sizeof(oid_p256)},
    {"p384", oid_p384, sizeof(oid_p384)},
    {"rsa2048", NULL, 0},
};

static CK_RV keygen(size_t t, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv, double *spent)
{
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits = 2048;
    CK_BYTE f4[] = {1, 0, 1};
    CK_BYTE id[] = {'b', 'e', 'n', 'c', 'h'};
    char label[] = "native-bench";
    CK_ATTRIBUTE pt[7], st[9];
    CK_ULONG np = 0, ns = 0;
    pt[np++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    pt[np++] = (CK_ATTRIBUTE){CKA_VERIFY, &yes, sizeof(yes)};
    pt[np++] = (CK_ATTRIBUTE){CKA_LABEL, label, strlen(label)};
    pt[np++] = (CK_ATTRIBUTE){CKA_ID, id, sizeof(id)};
    if (types[t].oid != NULL) {
        pt[np++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)types[t].oid, types[t].oid_len};
    } else {
        pt[np++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
        pt[np++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, f4, sizeof(f4)};
    }
    st[ns++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    st[ns++] = (CK_ATTRIBUTE){CKA_PRIVATE, &yes, sizeof(yes)};
    st[ns++] = (CK_ATTRIBUTE){CKA_SENSITIVE, &yes, sizeof(yes)};
    st[ns++] = (CK_ATTRIBUTE){CKA_EXTRACTABLE, &no, sizeof(no)};
    st[ns++] = (CK_ATTRIBUTE){CKA_SIGN, &yes, sizeof(yes)};
    st[ns++] = (CK_ATTRIBUTE){CKA_LABEL, label, strlen(label)};
    st[ns++] = (CK_ATTRIBUTE){CKA_ID, id, sizeof(id)};
    CK_MECHANISM m = {types[t].oid != NULL ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, NULL,
                      0};
    double s = bench_now();
    CK_RV rv = fn->C_GenerateKeyPair(sess, &m, pt, np, st, ns, pub, priv);
    *spent += bench_now() - s;
    return rv;
}

static int bench(size_t t, int keygens, int signs)
{
    int n = types[t].oid == NULL ? (keygens + 4) / 5 : keygens;
    CK_OBJECT_HANDLE pub = 0, priv = 0;
    double spent = 0;
    for (int i = 0; i < n; i++) {
        if (check(keygen(t, &pub, &priv, &spent), "C_GenerateKeyPair")) {
            return 1;
        }
        if (i + 1 < n) {
            fn->C_DestroyObject(sess, priv);
            fn->C_DestroyObject(sess, pub);
        }
    }
    printf("pkcs11\tkeygen-%s\tnative\t%.1f\t%ld\n", types[t].name, spent > 0 ? n / spent : 0.0,
           bench_maxrss_kb());

    CK_BYTE data[sizeof(sha256_prefix) + 32], sig[512];
    memcpy(data, sha256_prefix, sizeof(sha256_prefix));
    memset(data + sizeof(sha256_prefix), 0x5a, 32);
    CK_BYTE *in = types[t].oid != NULL ? data + sizeof(sha256_prefix) : data;
    CK_ULONG in_len = types[t].oid != NULL ? 32 : sizeof(data);
    CK_MECHANISM m = {types[t].oid != NULL ? CKM_ECDSA : CKM_RSA_PKCS, NULL, 0};
    double s = bench_now();
    for (int i = 0; i < signs; i++) {
        CK_ULONG sig_len = sizeof(sig);
        if (check(fn->C_SignInit(sess, &m, priv), "C_SignInit") ||
            check(fn->C_Sign(sess, in, in_len, sig, &sig_len), "C_Sign")) {
            return 1;
        }
    }
    printf("pkcs11\tsign-%s\tnative\t%.1f\t%ld\n", types[t].name, (double)signs / (bench_now() - s),
           bench_maxrss_kb());
    fn->C_DestroyObject(sess, priv);
    fn->C_DestroyObject(sess, pub);
    return 0;
}

int main(int argc, char **argv)
{
    const char *module = NULL, *token = NULL, *pin = NULL;
    int keygens = 30, signs = 300;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--module") == 0) {
            module = argv[i + 1];
        } else if (strcmp(argv[i], "--token") == 0) {
            token = argv[i + 1];
        } else if (strcmp(argv[i], "--pin") == 0) {
            pin = argv[i + 1];
        } else if (strcmp(argv[i], "--keygens") == 0) {
            keygens = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--signs") == 0) {
            signs = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--only") == 0) {
            bench_only = argv[i + 1];
        }
    }
    if (module == NULL || token == NULL || pin == NULL || keygens < 1 || signs < 1) {
        fprintf(stderr,
                "usage: %s --module PATH --token LABEL --pin PIN [--keygens N] [--signs N]\n",
                argv[0]);
        return 2;
    }
    void *lib = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "native-pkcs11: %s\n", dlerror());
        return 1;
    }
    CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    if (get == NULL || check(get(&fn), "C_GetFunctionList") ||
        check(fn->C_Initialize(NULL), "C_Initialize")) {
        return 1;
    }
    CK_SLOT_ID slots[64];
    CK_ULONG nslots = 64;
    if (check(fn->C_GetSlotList(CK_TRUE, slots, &nslots), "C_GetSlotList")) {
        return 1;
    }
    CK_SLOT_ID slot = 0;
    int found = 0;
    for (CK_ULONG i = 0; i < nslots && !found; i++) {
        CK_TOKEN_INFO ti;
        size_t len = strlen(token);
        if (fn->C_GetTokenInfo(slots[i], &ti) == CKR_OK && len <= 32 &&
            memcmp(ti.label, token, len) == 0 && (len == 32 || ti.label[len] == ' ')) {
            slot = slots[i];
            found = 1;
        }
    }
    if (!found) {
        fprintf(stderr, "native-pkcs11: no token %s\n", token);
        return 1;
    }
    if (check(fn->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &sess),
              "C_OpenSession") ||
        check(fn->C_Login(sess, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin)), "C_Login")) {
        return 1;
    }
    int rc = 0;
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]) && rc == 0; t++) {
        if (bench_type_on(types[t].name))
            rc = bench(t, keygens, signs);
    }
    fn->C_CloseSession(sess);
    fn->C_Finalize(NULL);
    dlclose(lib);
    return rc;
}
