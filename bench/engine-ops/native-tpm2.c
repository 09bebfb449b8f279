/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-bench-native-tpm2: the key generation and signing that the tpm2:
 * driver does, called directly through tpm2-tss ESAPI, for comparison with
 * estc-bench-engine-ops. The TCTI comes from TPM2TOOLS_TCTI (or the tctildr
 * default). A key generation is TPM2_Create + TPM2_Load + TPM2_EvictControl
 * + TPM2_FlushContext under the SRK at 0x81000001 (made when absent); a
 * signature is one TPM2_Sign with the persistent key already open, as an
 * application holding its ESYS_TR would do it.
 *
 *   estc-bench-native-tpm2 [--keygens N] [--signs N]
 *
 * Output rows: tpm2 <operation> native <ops_per_sec>
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "bench.h"

#define SRK_HANDLE 0x81000001u
#define BENCH_HANDLE 0x81000400u

static int check(const char *call, TSS2_RC rc)
{
    if (rc != TSS2_RC_SUCCESS) {
        fprintf(stderr, "%s: %s\n", call, Tss2_RC_Decode(rc));
        return 1;
    }
    return 0;
}

static void ecc_params(TPMT_PUBLIC *p, TPMI_ECC_CURVE curve)
{
    p->type = TPM2_ALG_ECC;
    p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
    p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    p->parameters.eccDetail.curveID = curve;
    p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
}

static int srk_get(ESYS_CONTEXT *esys, ESYS_TR *srk)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    if (check("Esys_GetCapability",
              Esys_GetCapability(esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES,
                                 SRK_HANDLE, 1, NULL, &cap)))
        return 1;
    int present = cap->data.handles.count > 0 && cap->data.handles.handle[0] == SRK_HANDLE;
    Esys_Free(cap);
    if (present)
        return check(
            "Esys_TR_FromTPMPublic",
            Esys_TR_FromTPMPublic(esys, SRK_HANDLE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, srk));
    TPM2B_PUBLIC tmpl = {0};
    TPMT_PUBLIC *p = &tmpl.publicArea;
    ecc_params(p, TPM2_ECC_NIST_P256);
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
    p->parameters.eccDetail.symmetric.keyBits.aes = 128;
    p->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    p->unique.ecc.x.size = 32;
    p->unique.ecc.y.size = 32;
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    ESYS_TR primary = ESYS_TR_NONE;
    if (check("Esys_CreatePrimary",
              Esys_CreatePrimary(esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                 ESYS_TR_NONE, &sens, &tmpl, &outside, &pcrs, &primary, NULL, NULL,
                                 NULL, NULL)))
        return 1;
    TSS2_RC rc = Esys_EvictControl(esys, ESYS_TR_RH_OWNER, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, SRK_HANDLE, srk);
    Esys_FlushContext(esys, primary);
    return check("Esys_EvictControl", rc);
}

/* Create, load, persist at BENCH_HANDLE, flush. *persistent gets the handle. */
static int keygen(ESYS_CONTEXT *esys, ESYS_TR srk, const TPM2B_PUBLIC *tmpl, ESYS_TR *persistent)
{
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR key = ESYS_TR_NONE;
    int rc = check("Esys_Create",
                   Esys_Create(esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens, tmpl,
                               &outside, &pcrs, &priv, &pub, NULL, NULL, NULL));
    if (rc == 0)
        rc = check("Esys_Load", Esys_Load(esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                          priv, pub, &key));
    if (rc == 0)
        rc = check("Esys_EvictControl",
                   Esys_EvictControl(esys, ESYS_TR_RH_OWNER, key, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                     ESYS_TR_NONE, BENCH_HANDLE, persistent));
    if (key != ESYS_TR_NONE)
        Esys_FlushContext(esys, key);
    Esys_Free(priv);
    Esys_Free(pub);
    return rc;
}

static int evict(ESYS_CONTEXT *esys, ESYS_TR *persistent)
{
    ESYS_TR none = ESYS_TR_NONE;
    int rc = check("Esys_EvictControl",
                   Esys_EvictControl(esys, ESYS_TR_RH_OWNER, *persistent, ESYS_TR_PASSWORD,
                                     ESYS_TR_NONE, ESYS_TR_NONE, BENCH_HANDLE, &none));
    Esys_TR_Close(esys, persistent);
    return rc;
}

int main(int argc, char **argv)
{
    int keygens = 10, signs = 100;
    if (!bench_counts(argc, argv, &keygens, &signs))
        return 2;
    const char *conf = getenv("TPM2TOOLS_TCTI");
    TSS2_TCTI_CONTEXT *tcti = NULL;
    ESYS_CONTEXT *esys = NULL;
    ESYS_TR srk = ESYS_TR_NONE;
    if (check("Tss2_TctiLdr_Initialize", Tss2_TctiLdr_Initialize(conf, &tcti)) ||
        check("Esys_Initialize", Esys_Initialize(&esys, tcti, NULL)) || srk_get(esys, &srk)) {
        Esys_Finalize(&esys);
        Tss2_TctiLdr_Finalize(&tcti);
        return 1;
    }

    static const struct {
        const char *name;
        TPM2_ALG_ID type;
        TPMI_ECC_CURVE curve;
        TPM2_ALG_ID scheme;
    } kinds[] = {
        {"p256", TPM2_ALG_ECC, TPM2_ECC_NIST_P256, TPM2_ALG_ECDSA},
        {"p384", TPM2_ALG_ECC, TPM2_ECC_NIST_P384, TPM2_ALG_ECDSA},
        {"rsa2048", TPM2_ALG_RSA, 0, TPM2_ALG_RSASSA},
    };
    int rc = 0;
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]) && rc == 0; k++) {
        if (!bench_type_on(kinds[k].name))
            continue;
        TPM2B_PUBLIC tmpl = {0};
        TPMT_PUBLIC *p = &tmpl.publicArea;
        p->nameAlg = TPM2_ALG_SHA256;
        p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                              TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                              TPMA_OBJECT_SIGN_ENCRYPT;
        if (kinds[k].type == TPM2_ALG_ECC) {
            ecc_params(p, kinds[k].curve);
        } else {
            p->type = TPM2_ALG_RSA;
            p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
            p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
            p->parameters.rsaDetail.keyBits = 2048;
        }
        /* The same counts as estc-bench-engine-ops: RSA keygens are a fifth. */
        int n = kinds[k].type == TPM2_ALG_RSA ? (keygens + 4) / 5 : keygens;
        ESYS_TR key = ESYS_TR_NONE;
        double spent = 0;
        for (int i = 0; i < n && rc == 0; i++) {
            double s = bench_now();
            rc = keygen(esys, srk, &tmpl, &key);
            spent += bench_now() - s;
            if (rc == 0 && i + 1 < n)
                rc = evict(esys, &key);
        }
        if (rc != 0)
            break;
        printf("tpm2\tkeygen-%s\tnative\t%.1f\t%ld\n", kinds[k].name, n / spent, bench_maxrss_kb());

        TPM2B_DIGEST digest = {.size = 32};
        memset(digest.buffer, 0x5a, 32);
        TPMT_SIG_SCHEME scheme = {.scheme = kinds[k].scheme};
        scheme.details.any.hashAlg = TPM2_ALG_SHA256;
        TPMT_TK_HASHCHECK ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
        double s = bench_now();
        for (int i = 0; i < signs && rc == 0; i++) {
            TPMT_SIGNATURE *sig = NULL;
            rc = check("Esys_Sign", Esys_Sign(esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                              ESYS_TR_NONE, &digest, &scheme, &ticket, &sig));
            Esys_Free(sig);
        }
        double secs = bench_now() - s;
        if (rc == 0)
            printf("tpm2\tsign-%s\tnative\t%.1f\t%ld\n", kinds[k].name, signs / secs,
                   bench_maxrss_kb());
        if (evict(esys, &key) != 0)
            rc = 1;
    }
    Esys_TR_Close(esys, &srk);
    Esys_Finalize(&esys);
    Tss2_TctiLdr_Finalize(&tcti);
    return rc;
}
