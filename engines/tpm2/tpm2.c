/*
 * The "tpm2:" driver: keys as persistent objects under an ECC P-256 storage
 * primary key, certificates and trust-store certificates in NV indices, all
 * through tpm2-tss ESAPI. See docs/engines/tpm2.md for the address syntax.
 *
 * Every command uses password authorization with the empty password (owner
 * hierarchy, keys and NV indices). Transient objects exist only inside one
 * operation and are flushed before it returns: a TPM without a resource
 * manager has as few as three transient slots.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <tss2/tss2_esys.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "util.h"

#define PERSISTENT_OWNER_FIRST 0x81000000u
#define PERSISTENT_OWNER_LAST 0x817FFFFFu
#define NV_FIRST 0x01000000u
#define NV_LAST 0x01FFFFFFu

#define DEFAULT_SRK 0x81000001u
#define KEY_CACHE 8
/* Default ranges for derived addresses (see docs/engines/tpm2.md). */
#define DEFAULT_KEY_LO 0x81020000u
#define DEFAULT_KEY_HI 0x8102FFFFu
#define DEFAULT_NV_LO 0x01800000u
#define DEFAULT_NV_HI 0x0181FFFFu

/* One TPM connection: one TCTI and its ESYS context, kept for the context's
 * lifetime and shared by every address naming the same TCTI. */
struct tpm2_conn {
    char *tcti; /* configuration string; "" for the tctildr default */
    TSS2_TCTI_CONTEXT *tcti_ctx;
    ESYS_CONTEXT *esys;
    uint32_t nv_buffer_max; /* 0 until asked */
    uint32_t nv_index_max;
    /* Open handles kept across operations to save TPM round trips. Each use
     * of a cached key re-reads its public area, so a key replaced behind our
     * back is seen as it is now. */
    uint32_t srk_handle;
    ESYS_TR srk_tr;
    struct {
        uint32_t handle;
        ESYS_TR tr;
    } keys[KEY_CACHE];
    size_t n_keys;
    unsigned tested_types; /* bit per estc_key_type that TestParms accepted */
};

struct tpm2_state {
    struct tpm2_conn *conns;
    size_t n_conns;
};

enum addr_type { ADDR_PREFIX, ADDR_KEY, ADDR_NV };

/* A parsed address. */
struct tpm2_addr {
    enum addr_type type;
    uint32_t handle;         /* key handle or NV index */
    char *tcti;              /* from ?tcti=, NULL when absent */
    uint32_t srk;            /* storage primary handle */
    uint32_t key_lo, key_hi; /* prefixes: key handle range */
    uint32_t nv_lo, nv_hi;   /* prefixes: NV range, certs low half, trust high half */
    const char *query;       /* the raw query after '?', NULL when absent */
};

static void addr_clear(struct tpm2_addr *a)
{
    free(a->tcti);
    a->tcti = NULL;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* The TPM response code without parameter/handle/session numbers. */
static TSS2_RC rc_base(TSS2_RC rc)
{
    if ((rc & 0xFFFF0000u) != 0)
        return rc; /* a TSS layer code (ESYS, TCTI, MU) */
    if (rc & TPM2_RC_FMT1)
        return rc & (TPM2_RC_FMT1 | 0x3Fu);
    return rc & 0xFFFu;
}

static bool rc_is_handle(TSS2_RC rc)
{
    TSS2_RC b = rc_base(rc);
    return b == TPM2_RC_HANDLE || b == TPM2_RC_REFERENCE_H0;
}

static estc_err tss_err(estc_ctx *ctx, const char *addr, const char *call, TSS2_RC rc)
{
    estc_err err = ESTC_ERR_ENGINE;
    switch (rc_base(rc)) {
    case TPM2_RC_HANDLE:
        err = ESTC_ERR_NOT_FOUND;
        break;
    case TPM2_RC_AUTH_FAIL:
    case TPM2_RC_BAD_AUTH:
    case TPM2_RC_LOCKOUT:
    case TPM2_RC_AUTH_MISSING:
        err = ESTC_ERR_AUTH;
        break;
    case TPM2_RC_NV_DEFINED:
        err = ESTC_ERR_EXISTS;
        break;
    case TPM2_RC_NV_SPACE:
    case TPM2_RC_NV_SIZE:
    case TPM2_RC_OBJECT_MEMORY:
        err = ESTC_ERR_LIMIT;
        break;
    case TPM2_RC_CURVE:
    case TPM2_RC_KEY_SIZE:
    case TPM2_RC_ASYMMETRIC:
    case TPM2_RC_SCHEME:
    case TPM2_RC_HASH:
        err = ESTC_ERR_UNSUPPORTED;
        break;
    default:
        break;
    }
    return estc_error(ctx, err, "%s: %s: %s", addr, call, Tss2_RC_Decode(rc));
}

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */
/* ------------------------------------------------------------------------ */

static bool parse_u32(const char *s, uint32_t *out)
{
    if (s == NULL || s[0] == '\0' || s[0] == '-' || s[0] == '+' || s[0] == ' ')
        return false;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 0);
    if (end == s || *end != '\0' || v > 0xFFFFFFFFull)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool parse_range(const char *s, uint32_t first, uint32_t last, uint32_t *lo, uint32_t *hi)
{
    const char *dash = strchr(s, '-');
    if (dash == NULL || dash - s > 16)
        return false;
    char left[17];
    memcpy(left, s, (size_t)(dash - s));
    left[dash - s] = '\0';
    if (!parse_u32(left, lo) || !parse_u32(dash + 1, hi))
        return false;
    return *lo <= *hi && *lo >= first && *hi <= last;
}

static bool name_is(const char *item, size_t len, const char *name)
{
    size_t n = strlen(name);
    return len > n && memcmp(item, name, n) == 0 && item[n] == '=';
}

/* Checks that every attribute in [s, end) separated by @sep is one of @names. */
static bool attrs_known(const char *s, const char *end, char sep, const char *const *names)
{
    if (end > s && end[-1] == sep)
        return false; /* an empty last attribute */
    while (s < end) {
        const char *e = memchr(s, sep, (size_t)(end - s));
        if (e == NULL)
            e = end;
        bool ok = false;
        for (const char *const *n = names; *n != NULL; n++)
            ok = ok || name_is(s, (size_t)(e - s), *n);
        if (!ok)
            return false;
        s = e < end ? e + 1 : end;
    }
    return true;
}

/* Fetches attribute @name as a number; false with *err set on a bad value. */
static int get_attr(estc_ctx *ctx, const char *addr, const char *name, char **val, estc_err *err)
{
    *val = NULL;
    estc_err e = estc_address_attr(addr, name, val, NULL);
    if (e == ESTC_ERR_NOT_FOUND)
        return 0;
    if (e != ESTC_OK) {
        *err = e == ESTC_ERR_BAD_ADDRESS
                   ? estc_error(ctx, e, "%s: bad or repeated attribute '%s'", addr, name)
                   : e;
        return -1;
    }
    return 1;
}

static estc_err addr_parse(estc_ctx *ctx, const char *addr, struct tpm2_addr *a)
{
    static const char *const path_names[] = {"handle", "nv", "handle-range", "nv-range", NULL};
    static const char *const query_names[] = {"tcti", "srk", NULL};
    memset(a, 0, sizeof(*a));
    a->srk = DEFAULT_SRK;
    a->key_lo = DEFAULT_KEY_LO;
    a->key_hi = DEFAULT_KEY_HI;
    a->nv_lo = DEFAULT_NV_LO;
    a->nv_hi = DEFAULT_NV_HI;

    const char *colon = strchr(addr, ':');
    if (colon == NULL)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: no scheme", addr);
    const char *path = colon + 1;
    const char *q = strchr(path, '?');
    const char *path_end = q != NULL ? q : path + strlen(path);
    if (q != NULL)
        a->query = q + 1;
    if (!attrs_known(path, path_end, ';', path_names) ||
        (q != NULL && !attrs_known(q + 1, q + 1 + strlen(q + 1), '&', query_names)))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: unknown or empty attribute (path: handle, nv, handle-range, "
                          "nv-range; query: tcti, srk)",
                          addr);

    estc_err err = ESTC_OK;
    char *v = NULL;
    int r;
    bool has_handle = false, has_nv = false, has_range = false;

    if ((r = get_attr(ctx, addr, "handle", &v, &err)) < 0)
        goto fail;
    if (r > 0) {
        if (!parse_u32(v, &a->handle) || a->handle < PERSISTENT_OWNER_FIRST ||
            a->handle > PERSISTENT_OWNER_LAST) {
            err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                             "%s: handle must be a persistent owner handle 0x81000000-0x817fffff",
                             addr);
            goto fail;
        }
        has_handle = true;
        a->type = ADDR_KEY;
    }
    free(v);
    v = NULL;
    if ((r = get_attr(ctx, addr, "nv", &v, &err)) < 0)
        goto fail;
    if (r > 0) {
        if (!parse_u32(v, &a->handle) || a->handle < NV_FIRST || a->handle > NV_LAST) {
            err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                             "%s: nv must be an NV index 0x01000000-0x01ffffff", addr);
            goto fail;
        }
        has_nv = true;
        a->type = ADDR_NV;
    }
    free(v);
    v = NULL;
    if ((r = get_attr(ctx, addr, "handle-range", &v, &err)) < 0)
        goto fail;
    if (r > 0) {
        if (!parse_range(v, PERSISTENT_OWNER_FIRST, PERSISTENT_OWNER_LAST, &a->key_lo,
                         &a->key_hi)) {
            err =
                estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                           "%s: handle-range must be LOW-HIGH within 0x81000000-0x817fffff", addr);
            goto fail;
        }
        has_range = true;
    }
    free(v);
    v = NULL;
    if ((r = get_attr(ctx, addr, "nv-range", &v, &err)) < 0)
        goto fail;
    if (r > 0) {
        if (!parse_range(v, NV_FIRST, NV_LAST, &a->nv_lo, &a->nv_hi) || a->nv_lo == a->nv_hi) {
            err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                             "%s: nv-range must be LOW-HIGH (two indices or more) within "
                             "0x01000000-0x01ffffff",
                             addr);
            goto fail;
        }
        has_range = true;
    }
    free(v);
    v = NULL;
    if ((r = get_attr(ctx, addr, "srk", &v, &err)) < 0)
        goto fail;
    if (r > 0 && (!parse_u32(v, &a->srk) || a->srk < PERSISTENT_OWNER_FIRST ||
                  a->srk > PERSISTENT_OWNER_LAST)) {
        err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                         "%s: srk must be a persistent owner handle 0x81000000-0x817fffff", addr);
        goto fail;
    }
    free(v);
    v = NULL;
    if ((r = get_attr(ctx, addr, "tcti", &a->tcti, &err)) < 0)
        goto fail;
    if (r > 0 && a->tcti[0] == '\0') {
        err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty tcti", addr);
        goto fail;
    }

    if ((has_handle && has_nv) || ((has_handle || has_nv) && has_range)) {
        err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                         "%s: give one of handle=, nv= (an object) or ranges (a prefix)", addr);
        goto fail;
    }
    return ESTC_OK;
fail:
    free(v);
    addr_clear(a);
    return err;
}

/* Parses @addr and checks it names an object of @want. */
static estc_err addr_object(estc_ctx *ctx, const char *addr, enum addr_type want,
                            struct tpm2_addr *a)
{
    estc_err err = addr_parse(ctx, addr, a);
    if (err != ESTC_OK)
        return err;
    if (a->type != want) {
        addr_clear(a);
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: expected %s", addr,
                          want == ADDR_KEY  ? "a key address (handle=0x81......)"
                          : want == ADDR_NV ? "a certificate address (nv=0x01......)"
                                            : "a prefix (no handle= or nv=)");
    }
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */
/* ------------------------------------------------------------------------ */

/* The TCTI for an address: its tcti= attribute, else ESTC_TPM2_TCTI,
 * TPM2TOOLS_TCTI, TCTI from the environment, else "" (tctildr's default). */
static const char *tcti_for(const struct tpm2_addr *a)
{
    if (a->tcti != NULL)
        return a->tcti;
    static const char *const vars[] = {"ESTC_TPM2_TCTI", "TPM2TOOLS_TCTI", "TCTI"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v != NULL && v[0] != '\0')
            return v;
    }
    return "";
}

static void conn_close(struct tpm2_conn *c)
{
    if (c->esys != NULL)
        Esys_Finalize(&c->esys);
    if (c->tcti_ctx != NULL)
        Tss2_TctiLdr_Finalize(&c->tcti_ctx);
    free(c->tcti);
    c->tcti = NULL;
}

static estc_err conn_get(estc_ctx *ctx, struct tpm2_state *st, const char *addr,
                         const struct tpm2_addr *a, struct tpm2_conn **out)
{
    const char *conf = tcti_for(a);
    for (size_t i = 0; i < st->n_conns; i++) {
        if (strcmp(st->conns[i].tcti, conf) == 0) {
            *out = &st->conns[i];
            return ESTC_OK;
        }
    }
    struct tpm2_conn c = {0};
    c.srk_tr = ESYS_TR_NONE;
    c.tcti = strdup(conf);
    if (c.tcti == NULL)
        return ESTC_ERR_NOMEM;
    TSS2_RC rc = Tss2_TctiLdr_Initialize(conf[0] != '\0' ? conf : NULL, &c.tcti_ctx);
    if (rc != TSS2_RC_SUCCESS) {
        conn_close(&c);
        return estc_error(ctx, ESTC_ERR_ENGINE, "%s: Tss2_TctiLdr_Initialize(\"%s\"): %s", addr,
                          conf[0] != '\0' ? conf : "default", Tss2_RC_Decode(rc));
    }
    rc = Esys_Initialize(&c.esys, c.tcti_ctx, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        conn_close(&c);
        return estc_error(ctx, ESTC_ERR_ENGINE, "%s: Esys_Initialize: %s", addr,
                          Tss2_RC_Decode(rc));
    }
    /* A TPM already started answers TPM2_RC_INITIALIZE; any real failure
     * shows in the next command. */
    rc = Esys_Startup(c.esys, TPM2_SU_CLEAR);
    if (rc != TSS2_RC_SUCCESS && rc_base(rc) != TPM2_RC_INITIALIZE)
        estc_log(ctx, ESTC_LOG_DEBUG, "%s: Esys_Startup: %s", addr, Tss2_RC_Decode(rc));
    struct tpm2_conn *grown = realloc(st->conns, (st->n_conns + 1) * sizeof(*grown));
    if (grown == NULL) {
        conn_close(&c);
        return ESTC_ERR_NOMEM;
    }
    st->conns = grown;
    st->conns[st->n_conns] = c;
    *out = &st->conns[st->n_conns++];
    return ESTC_OK;
}

static estc_err tpm_property(estc_ctx *ctx, struct tpm2_conn *c, const char *addr, TPM2_PT pt,
                             uint32_t *value)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TSS2_RC rc = Esys_GetCapability(c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                    TPM2_CAP_TPM_PROPERTIES, pt, 1, NULL, &cap);
    if (rc != TSS2_RC_SUCCESS)
        return tss_err(ctx, addr, "Esys_GetCapability", rc);
    bool ok =
        cap->data.tpmProperties.count > 0 && cap->data.tpmProperties.tpmProperty[0].property == pt;
    if (ok)
        *value = cap->data.tpmProperties.tpmProperty[0].value;
    Esys_Free(cap);
    if (!ok)
        return estc_error(ctx, ESTC_ERR_ENGINE, "%s: TPM property 0x%x missing", addr,
                          (unsigned)pt);
    return ESTC_OK;
}

/* Walks the handles in [lo, hi] that the TPM holds; @fn returns false to stop. */
static estc_err handles_walk(estc_ctx *ctx, struct tpm2_conn *c, const char *addr, uint32_t lo,
                             uint32_t hi, bool (*fn)(void *arg, uint32_t h), void *arg)
{
    uint32_t next = lo;
    for (;;) {
        TPMS_CAPABILITY_DATA *cap = NULL;
        TPMI_YES_NO more = TPM2_NO;
        TSS2_RC rc = Esys_GetCapability(c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                        TPM2_CAP_HANDLES, next, TPM2_MAX_CAP_HANDLES, &more, &cap);
        if (rc != TSS2_RC_SUCCESS)
            return tss_err(ctx, addr, "Esys_GetCapability", rc);
        uint32_t last = 0;
        bool done = cap->data.handles.count == 0;
        for (uint32_t i = 0; i < cap->data.handles.count && !done; i++) {
            uint32_t h = cap->data.handles.handle[i];
            last = h;
            if (h < lo)
                continue;
            if (h > hi || !fn(arg, h))
                done = true;
        }
        Esys_Free(cap);
        if (done || more != TPM2_YES || last >= hi || last < next)
            return ESTC_OK;
        next = last + 1;
    }
}

static bool first_handle(void *arg, uint32_t h)
{
    *(uint32_t *)arg = h;
    return false;
}

/* Whether the TPM holds persistent object or NV index @h. */
static estc_err handle_present(estc_ctx *ctx, struct tpm2_conn *c, const char *addr, uint32_t h,
                               bool *present)
{
    uint32_t found = 0;
    estc_err err = handles_walk(ctx, c, addr, h, h, first_handle, &found);
    *present = err == ESTC_OK && found == h;
    return err;
}

/* An ESYS_TR for the persistent object or NV index @h; ESTC_ERR_NOT_FOUND
 * when the TPM does not hold it. Close it with Esys_TR_Close(). */
static estc_err tr_from(estc_ctx *ctx, struct tpm2_conn *c, const char *addr, uint32_t h,
                        ESYS_TR *tr)
{
    /* Asking first keeps ESYS from logging an error for a missing handle. */
    bool present = false;
    estc_err err = handle_present(ctx, c, addr, h, &present);
    if (err != ESTC_OK)
        return err;
    if (!present)
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: no object at 0x%08x", addr, (unsigned)h);
    TSS2_RC rc = Esys_TR_FromTPMPublic(c->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr);
    if (rc == TSS2_RC_SUCCESS)
        return ESTC_OK;
    if (rc_is_handle(rc))
        return estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: no object at 0x%08x: %s", addr, (unsigned)h,
                          Tss2_RC_Decode(rc));
    return tss_err(ctx, addr, "Esys_TR_FromTPMPublic", rc);
}

static void tr_close(struct tpm2_conn *c, ESYS_TR *tr)
{
    if (*tr != ESYS_TR_NONE)
        Esys_TR_Close(c->esys, tr);
    *tr = ESYS_TR_NONE;
}

static void flush(struct tpm2_conn *c, ESYS_TR *tr)
{
    if (*tr != ESYS_TR_NONE)
        Esys_FlushContext(c->esys, *tr);
    *tr = ESYS_TR_NONE;
}

static void key_forget(struct tpm2_conn *c, uint32_t handle)
{
    for (size_t i = 0; i < c->n_keys; i++) {
        if (c->keys[i].handle == handle) {
            tr_close(c, &c->keys[i].tr);
            c->keys[i] = c->keys[--c->n_keys];
            return;
        }
    }
}

static void key_remember(struct tpm2_conn *c, uint32_t handle, ESYS_TR tr)
{
    if (c->n_keys == KEY_CACHE) {
        /* Full: drop the oldest entry. */
        tr_close(c, &c->keys[0].tr);
        memmove(&c->keys[0], &c->keys[1], (KEY_CACHE - 1) * sizeof(c->keys[0]));
        c->n_keys--;
    }
    c->keys[c->n_keys].handle = handle;
    c->keys[c->n_keys++].tr = tr;
}

/* Common start of an operation: parse, check the kind, connect. */
static estc_err op_begin(estc_ctx *ctx, void *state, const char *addr, enum addr_type want,
                         struct tpm2_addr *a, struct tpm2_conn **c)
{
    estc_err err = addr_object(ctx, addr, want, a);
    if (err != ESTC_OK)
        return err;
    err = conn_get(ctx, state, addr, a, c);
    if (err != ESTC_OK)
        addr_clear(a);
    return err;
}

/* ------------------------------------------------------------------------ */
/* The storage root key                                                      */
/* ------------------------------------------------------------------------ */

/* The SRK template of the TCG provisioning guidance (ECC NIST P-256). */
static void srk_template(TPM2B_PUBLIC *pub)
{
    memset(pub, 0, sizeof(*pub));
    TPMT_PUBLIC *p = &pub->publicArea;
    p->type = TPM2_ALG_ECC;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_AES;
    p->parameters.eccDetail.symmetric.keyBits.aes = 128;
    p->parameters.eccDetail.symmetric.mode.aes = TPM2_ALG_CFB;
    p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
    p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
    p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
    p->unique.ecc.x.size = 32;
    p->unique.ecc.y.size = 32;
}

/* The storage primary key at the address's SRK handle, created and made
 * persistent when absent. */
static estc_err srk_get(estc_ctx *ctx, struct tpm2_conn *c, const char *addr,
                        const struct tpm2_addr *a, ESYS_TR *srk)
{
    if (c->srk_tr != ESYS_TR_NONE && c->srk_handle == a->srk) {
        *srk = c->srk_tr;
        return ESTC_OK;
    }
    tr_close(c, &c->srk_tr);
    estc_err err = tr_from(ctx, c, addr, a->srk, srk);
    if (err == ESTC_OK) {
        c->srk_tr = *srk;
        c->srk_handle = a->srk;
    }
    if (err != ESTC_ERR_NOT_FOUND)
        return err;
    TSS2_RC rc;

    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_PUBLIC tmpl;
    srk_template(&tmpl);
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    ESYS_TR primary = ESYS_TR_NONE;
    rc = Esys_CreatePrimary(c->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                            &sens, &tmpl, &outside, &pcrs, &primary, NULL, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS)
        return tss_err(ctx, addr, "Esys_CreatePrimary(srk)", rc);
    rc = Esys_EvictControl(c->esys, ESYS_TR_RH_OWNER, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, a->srk, srk);
    flush(c, &primary);
    if (rc != TSS2_RC_SUCCESS)
        return tss_err(ctx, addr, "Esys_EvictControl(srk)", rc);
    estc_log(ctx, ESTC_LOG_INFO, "%s: created the storage primary key at 0x%08x", addr,
             (unsigned)a->srk);
    c->srk_tr = *srk;
    c->srk_handle = a->srk;
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                      */
/* ------------------------------------------------------------------------ */

/* The cached SRK is dropped when a command using it failed: it may have been
 * evicted by someone else, and the next operation opens it afresh. */
static void srk_check(struct tpm2_conn *c, estc_err err)
{
    if (err == ESTC_ERR_NOT_FOUND || err == ESTC_ERR_ENGINE)
        tr_close(c, &c->srk_tr);
}

/* Persists transient @key at @a->handle and flushes it. */
static estc_err persist_key(estc_ctx *ctx, struct tpm2_conn *c, const char *addr,
                            const struct tpm2_addr *a, ESYS_TR *key)
{
    ESYS_TR pers = ESYS_TR_NONE;
    key_forget(c, a->handle); /* a stale cache entry from an earlier key there */
    TSS2_RC rc = Esys_EvictControl(c->esys, ESYS_TR_RH_OWNER, *key, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, a->handle, &pers);
    flush(c, key);
    if (rc != TSS2_RC_SUCCESS)
        return tss_err(ctx, addr, "Esys_EvictControl", rc);
    tr_close(c, &pers);
    return ESTC_OK;
}

static estc_err key_template(estc_key_type type, TPM2B_PUBLIC *pub)
{
    memset(pub, 0, sizeof(*pub));
    TPMT_PUBLIC *p = &pub->publicArea;
    p->nameAlg = TPM2_ALG_SHA256;
    p->objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                          TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                          TPMA_OBJECT_SIGN_ENCRYPT;
    switch (type) {
    case ESTC_KEY_EC_P256:
    case ESTC_KEY_EC_P384:
        p->type = TPM2_ALG_ECC;
        p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.curveID =
            type == ESTC_KEY_EC_P256 ? TPM2_ECC_NIST_P256 : TPM2_ECC_NIST_P384;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
        return ESTC_OK;
    case ESTC_KEY_RSA_2048:
    case ESTC_KEY_RSA_3072:
        p->type = TPM2_ALG_RSA;
        p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = type == ESTC_KEY_RSA_2048 ? 2048 : 3072;
        p->parameters.rsaDetail.exponent = 0;
        return ESTC_OK;
    }
    return ESTC_ERR_UNSUPPORTED;
}

/* Asks the TPM whether it can make keys with these parameters. */
static estc_err check_params(estc_ctx *ctx, struct tpm2_conn *c, const char *addr,
                             const TPM2B_PUBLIC *pub, const char *what)
{
    TPMT_PUBLIC_PARMS parms = {.type = pub->publicArea.type};
    parms.parameters = pub->publicArea.parameters;
    TSS2_RC rc = Esys_TestParms(c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &parms);
    if (rc == TSS2_RC_SUCCESS)
        return ESTC_OK;
    if ((rc & 0xFFFF0000u) == 0)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: the TPM offers no %s keys: %s", addr,
                          what, Tss2_RC_Decode(rc));
    return tss_err(ctx, addr, "Esys_TestParms", rc);
}

static const char *key_type_name(estc_key_type type)
{
    switch (type) {
    case ESTC_KEY_EC_P256:
        return "EC P-256";
    case ESTC_KEY_EC_P384:
        return "EC P-384";
    case ESTC_KEY_RSA_2048:
        return "RSA 2048";
    case ESTC_KEY_RSA_3072:
        return "RSA 3072";
    }
    return "?";
}

/* Fails with ESTC_ERR_EXISTS when @a->handle is taken. */
static estc_err check_free(estc_ctx *ctx, struct tpm2_conn *c, const char *addr,
                           const struct tpm2_addr *a)
{
    bool present = false;
    estc_err err = handle_present(ctx, c, addr, a->handle, &present);
    if (err != ESTC_OK)
        return err;
    if (present)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: handle 0x%08x is in use", addr,
                          (unsigned)a->handle);
    if (a->type == ADDR_KEY && a->handle == a->srk)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: 0x%08x is the storage primary key handle",
                          addr, (unsigned)a->handle);
    return ESTC_OK;
}

static estc_err tpm2_key_generate(estc_ctx *ctx, void *state, const char *addr, estc_key_type type)
{
    struct tpm2_addr a;
    struct tpm2_conn *c;
    TPM2B_PUBLIC tmpl;
    if (key_template(type, &tmpl) != ESTC_OK)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown key type %d", addr, (int)type);
    estc_err err = op_begin(ctx, state, addr, ADDR_KEY, &a, &c);
    if (err != ESTC_OK)
        return err;
    ESYS_TR srk = ESYS_TR_NONE, key = ESYS_TR_NONE;
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    if (!(c->tested_types & (1u << type))) {
        err = check_params(ctx, c, addr, &tmpl, key_type_name(type));
        if (err == ESTC_OK)
            c->tested_types |= 1u << type;
    }
    if (err == ESTC_OK)
        err = check_free(ctx, c, addr, &a);
    if (err == ESTC_OK)
        err = srk_get(ctx, c, addr, &a, &srk);
    if (err != ESTC_OK)
        goto out;

    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    TSS2_RC rc = Esys_Create(c->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens,
                             &tmpl, &outside, &pcrs, &priv, &pub, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        err = tss_err(ctx, addr, "Esys_Create", rc);
        goto out;
    }
    rc = Esys_Load(c->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, pub, &key);
    if (rc != TSS2_RC_SUCCESS) {
        err = tss_err(ctx, addr, "Esys_Load", rc);
        goto out;
    }
    err = persist_key(ctx, c, addr, &a, &key);
out:
    flush(c, &key);
    srk_check(c, err);
    Esys_Free(priv);
    Esys_Free(pub);
    addr_clear(&a);
    return err;
}

/* Big-endian bytes of @bn padded to @len into @out. */
static bool bn_to_buf(const BIGNUM *bn, size_t len, uint8_t *out)
{
    return bn != NULL && BN_bn2binpad(bn, out, (int)len) == (int)len;
}

/* Fills the public area and the sensitive part of an imported key. */
static estc_err import_parts(estc_ctx *ctx, const char *addr, EVP_PKEY *pk, TPM2B_PUBLIC *pub,
                             TPM2B_SENSITIVE *sens)
{
    memset(pub, 0, sizeof(*pub));
    memset(sens, 0, sizeof(*sens));
    TPMT_PUBLIC *p = &pub->publicArea;
    p->nameAlg = TPM2_ALG_SHA256;
    /* The TPM refuses fixedTPM/fixedParent/sensitiveDataOrigin on an object
     * made outside; the empty authPolicy means TPM2_Duplicate can never be
     * authorized, so the key cannot leave the TPM either. */
    p->objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_SIGN_ENCRYPT;
    estc_err err = ESTC_ERR_UNSUPPORTED;
    BIGNUM *b1 = NULL, *b2 = NULL, *b3 = NULL;
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64] = "";
        size_t field = 0;
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            NULL))
            goto out;
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P256;
            field = 32;
        } else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            p->parameters.eccDetail.curveID = TPM2_ECC_NIST_P384;
            field = 48;
        } else {
            estc_error(ctx, err, "%s: curve %s not supported", addr, group);
            goto out;
        }
        p->type = TPM2_ALG_ECC;
        p->parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
        err = ESTC_ERR_FORMAT;
        if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &b1) ||
            !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &b2) ||
            !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &b3) ||
            !bn_to_buf(b1, field, p->unique.ecc.x.buffer) ||
            !bn_to_buf(b2, field, p->unique.ecc.y.buffer) ||
            !bn_to_buf(b3, field, sens->sensitiveArea.sensitive.ecc.buffer))
            goto out;
        p->unique.ecc.x.size = (UINT16)field;
        p->unique.ecc.y.size = (UINT16)field;
        sens->sensitiveArea.sensitiveType = TPM2_ALG_ECC;
        sens->sensitiveArea.sensitive.ecc.size = (UINT16)field;
    } else if (EVP_PKEY_is_a(pk, "RSA")) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits != 2048 && bits != 3072) {
            estc_error(ctx, err, "%s: RSA %d not supported", addr, bits);
            goto out;
        }
        size_t nlen = (size_t)bits / 8;
        p->type = TPM2_ALG_RSA;
        p->parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
        p->parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        p->parameters.rsaDetail.keyBits = (TPMI_RSA_KEY_BITS)bits;
        err = ESTC_ERR_FORMAT;
        if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &b1) ||
            !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &b2) ||
            !EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_FACTOR1, &b3) ||
            !bn_to_buf(b1, nlen, p->unique.rsa.buffer) ||
            !bn_to_buf(b3, nlen / 2, sens->sensitiveArea.sensitive.rsa.buffer) ||
            BN_num_bits(b2) > 32)
            goto out;
        p->unique.rsa.size = (UINT16)nlen;
        uint32_t e = (uint32_t)BN_get_word(b2);
        p->parameters.rsaDetail.exponent = e == 65537 ? 0 : e;
        sens->sensitiveArea.sensitiveType = TPM2_ALG_RSA;
        sens->sensitiveArea.sensitive.rsa.size = (UINT16)(nlen / 2);
    } else {
        estc_error(ctx, err, "%s: only EC and RSA keys can be imported", addr);
        goto out;
    }
    err = ESTC_OK;
out:
    BN_clear_free(b3);
    BN_free(b2);
    BN_free(b1);
    if (err == ESTC_ERR_FORMAT)
        estc_error(ctx, err, "%s: malformed private key", addr);
    return err;
}

static estc_err tpm2_key_import(estc_ctx *ctx, void *state, const char *addr, const uint8_t *pkcs8,
                                size_t pkcs8_len)
{
    if (pkcs8 == NULL || pkcs8_len == 0 || pkcs8_len > 0x7FFFFFFF)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: empty key", addr);
    struct tpm2_addr a;
    struct tpm2_conn *c;
    estc_err err = op_begin(ctx, state, addr, ADDR_KEY, &a, &c);
    if (err != ESTC_OK)
        return err;
    ESYS_TR srk = ESYS_TR_NONE, key = ESYS_TR_NONE;
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC pub;
    TPM2B_SENSITIVE sens;
    TPM2B_PRIVATE dup = {0};
    memset(&sens, 0, sizeof(sens));

    EVP_PKEY *pk = NULL;
    if (estc__pkcs8_decode(pkcs8, pkcs8_len, &pk) != ESTC_OK) {
        err = estc_error(ctx, ESTC_ERR_FORMAT, "%s: not a PKCS#8 private key", addr);
        goto out;
    }
    err = import_parts(ctx, addr, pk, &pub, &sens);
    if (err == ESTC_OK)
        err = check_params(ctx, c, addr, &pub, "such");
    if (err == ESTC_OK)
        err = check_free(ctx, c, addr, &a);
    if (err == ESTC_OK)
        err = srk_get(ctx, c, addr, &a, &srk);
    if (err != ESTC_OK)
        goto out;

    /* No outer or inner wrapper (empty seed, NULL symmetric algorithm): the
     * duplicate is the marshalled TPM2B_SENSITIVE itself. */
    size_t off = 0;
    TSS2_RC rc = Tss2_MU_TPM2B_SENSITIVE_Marshal(&sens, dup.buffer, sizeof(dup.buffer), &off);
    if (rc != TSS2_RC_SUCCESS) {
        err = tss_err(ctx, addr, "Tss2_MU_TPM2B_SENSITIVE_Marshal", rc);
        goto out;
    }
    dup.size = (UINT16)off;
    TPM2B_DATA enc_key = {0};
    TPM2B_ENCRYPTED_SECRET seed = {0};
    TPMT_SYM_DEF_OBJECT sym = {.algorithm = TPM2_ALG_NULL};
    rc = Esys_Import(c->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &enc_key, &pub,
                     &dup, &seed, &sym, &priv);
    if (rc != TSS2_RC_SUCCESS) {
        err = tss_err(ctx, addr, "Esys_Import", rc);
        goto out;
    }
    rc = Esys_Load(c->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, priv, &pub, &key);
    if (rc != TSS2_RC_SUCCESS) {
        err = tss_err(ctx, addr, "Esys_Load", rc);
        goto out;
    }
    err = persist_key(ctx, c, addr, &a, &key);
out:
    OPENSSL_cleanse(&sens, sizeof(sens));
    OPENSSL_cleanse(&dup, sizeof(dup));
    EVP_PKEY_free(pk);
    flush(c, &key);
    srk_check(c, err);
    Esys_Free(priv);
    addr_clear(&a);
    return err;
}

/* Opens the key at @a->handle (the ESYS_TR stays owned by the connection's
 * cache) and reads its public area, which also proves it is still there. */
static estc_err key_open(estc_ctx *ctx, struct tpm2_conn *c, const char *addr,
                         const struct tpm2_addr *a, ESYS_TR *tr, TPM2B_PUBLIC **pub)
{
    *tr = ESYS_TR_NONE;
    for (size_t i = 0; i < c->n_keys; i++) {
        if (c->keys[i].handle == a->handle) {
            TSS2_RC rc = Esys_ReadPublic(c->esys, c->keys[i].tr, ESYS_TR_NONE, ESYS_TR_NONE,
                                         ESYS_TR_NONE, pub, NULL, NULL);
            if (rc == TSS2_RC_SUCCESS)
                *tr = c->keys[i].tr;
            else
                key_forget(c, a->handle); /* gone or replaced: open it afresh */
            break;
        }
    }
    if (*tr == ESYS_TR_NONE) {
        estc_err err = tr_from(ctx, c, addr, a->handle, tr);
        if (err != ESTC_OK)
            return err;
        TSS2_RC rc = Esys_ReadPublic(c->esys, *tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, pub,
                                     NULL, NULL);
        if (rc != TSS2_RC_SUCCESS) {
            tr_close(c, tr);
            return tss_err(ctx, addr, "Esys_ReadPublic", rc);
        }
        key_remember(c, a->handle, *tr);
    }
    TPMA_OBJECT attrs = (*pub)->publicArea.objectAttributes;
    if (!(attrs & TPMA_OBJECT_SIGN_ENCRYPT) || (attrs & TPMA_OBJECT_RESTRICTED) ||
        ((*pub)->publicArea.type != TPM2_ALG_ECC && (*pub)->publicArea.type != TPM2_ALG_RSA)) {
        key_forget(c, a->handle);
        *tr = ESYS_TR_NONE;
        Esys_Free(*pub);
        *pub = NULL;
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: the object is not an unrestricted EC or RSA signing key", addr);
    }
    return ESTC_OK;
}

static estc_key_type ecc_key_type(TPMI_ECC_CURVE curve)
{
    if (curve == TPM2_ECC_NIST_P256)
        return ESTC_KEY_EC_P256;
    if (curve == TPM2_ECC_NIST_P384)
        return ESTC_KEY_EC_P384;
    return 0;
}

static estc_err tpm2_key_public(estc_ctx *ctx, void *state, const char *addr, estc_buf *spki)
{
    struct tpm2_addr a;
    struct tpm2_conn *c;
    estc_err err = op_begin(ctx, state, addr, ADDR_KEY, &a, &c);
    if (err != ESTC_OK)
        return err;
    ESYS_TR tr = ESYS_TR_NONE;
    TPM2B_PUBLIC *pub = NULL;
    err = key_open(ctx, c, addr, &a, &tr, &pub);
    if (err != ESTC_OK)
        goto out;
    const TPMT_PUBLIC *p = &pub->publicArea;
    if (p->type == TPM2_ALG_ECC) {
        estc_key_type type = ecc_key_type(p->parameters.eccDetail.curveID);
        size_t field = estc__ec_field_len(type);
        if (field == 0 || p->unique.ecc.x.size > field || p->unique.ecc.y.size > field) {
            err = estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: unsupported curve 0x%x", addr,
                             (unsigned)p->parameters.eccDetail.curveID);
            goto out;
        }
        uint8_t point[1 + 2 * 66] = {0x04};
        memcpy(point + 1 + field - p->unique.ecc.x.size, p->unique.ecc.x.buffer,
               p->unique.ecc.x.size);
        memcpy(point + 1 + 2 * field - p->unique.ecc.y.size, p->unique.ecc.y.buffer,
               p->unique.ecc.y.size);
        err = estc__spki_from_ec_point(type, point, 1 + 2 * field, spki);
    } else {
        uint32_t e = p->parameters.rsaDetail.exponent;
        if (e == 0)
            e = 65537;
        uint8_t eb[4] = {(uint8_t)(e >> 24), (uint8_t)(e >> 16), (uint8_t)(e >> 8), (uint8_t)e};
        err = estc__spki_from_rsa(p->unique.rsa.buffer, p->unique.rsa.size, eb, sizeof(eb), spki);
    }
    if (err != ESTC_OK && err != ESTC_ERR_UNSUPPORTED)
        err = estc_error(ctx, err, "%s: cannot encode the public key", addr);
out:
    Esys_Free(pub);
    addr_clear(&a);
    return err;
}

static TPM2_ALG_ID hash_alg(estc_hash hash)
{
    switch (hash) {
    case ESTC_HASH_SHA256:
        return TPM2_ALG_SHA256;
    case ESTC_HASH_SHA384:
        return TPM2_ALG_SHA384;
    case ESTC_HASH_SHA512:
        return TPM2_ALG_SHA512;
    }
    return TPM2_ALG_NULL;
}

static estc_err tpm2_key_sign(estc_ctx *ctx, void *state, const char *addr, estc_sig_alg alg,
                              estc_hash hash, const uint8_t *digest, size_t digest_len,
                              estc_buf *sig)
{
    size_t hlen = estc__hash_len(hash);
    if (hlen == 0 || hash_alg(hash) == TPM2_ALG_NULL)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown hash %d", addr, (int)hash);
    if (digest == NULL || digest_len != hlen || sig == NULL)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: digest length %zu, expected %zu", addr,
                          digest_len, hlen);
    if (alg != ESTC_SIG_ECDSA && alg != ESTC_SIG_RSA_PKCS1 && alg != ESTC_SIG_RSA_PSS)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown signature algorithm %d", addr,
                          (int)alg);
    struct tpm2_addr a;
    struct tpm2_conn *c;
    estc_err err = op_begin(ctx, state, addr, ADDR_KEY, &a, &c);
    if (err != ESTC_OK)
        return err;
    ESYS_TR tr = ESYS_TR_NONE;
    TPM2B_PUBLIC *pub = NULL;
    TPMT_SIGNATURE *s = NULL;
    err = key_open(ctx, c, addr, &a, &tr, &pub);
    if (err != ESTC_OK)
        goto out;
    bool is_ec = pub->publicArea.type == TPM2_ALG_ECC;
    if (is_ec != (alg == ESTC_SIG_ECDSA)) {
        err = estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: signature algorithm does not fit a%s key",
                         addr, is_ec ? "n EC" : "n RSA");
        goto out;
    }
    TPMT_SIG_SCHEME scheme = {0};
    scheme.scheme = alg == ESTC_SIG_ECDSA       ? TPM2_ALG_ECDSA
                    : alg == ESTC_SIG_RSA_PKCS1 ? TPM2_ALG_RSASSA
                                                : TPM2_ALG_RSAPSS;
    scheme.details.any.hashAlg = hash_alg(hash);
    TPM2B_DIGEST dg = {.size = (UINT16)hlen};
    memcpy(dg.buffer, digest, hlen);
    TPMT_TK_HASHCHECK ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
    TSS2_RC rc = Esys_Sign(c->esys, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &dg, &scheme,
                           &ticket, &s);
    if (rc != TSS2_RC_SUCCESS) {
        err = tss_err(ctx, addr, "Esys_Sign", rc);
        goto out;
    }
    if (is_ec) {
        size_t field =
            estc__ec_field_len(ecc_key_type(pub->publicArea.parameters.eccDetail.curveID));
        const TPM2B_ECC_PARAMETER *r = &s->signature.ecdsa.signatureR;
        const TPM2B_ECC_PARAMETER *sv = &s->signature.ecdsa.signatureS;
        uint8_t rs[2 * 66] = {0};
        if (field == 0 || r->size > field || sv->size > field) {
            err = estc_error(ctx, ESTC_ERR_ENGINE, "%s: unexpected ECDSA signature size", addr);
            goto out;
        }
        memcpy(rs + field - r->size, r->buffer, r->size);
        memcpy(rs + 2 * field - sv->size, sv->buffer, sv->size);
        err = estc__ecdsa_raw_to_der(rs, 2 * field, sig);
    } else {
        const TPM2B_PUBLIC_KEY_RSA *rsig =
            alg == ESTC_SIG_RSA_PKCS1 ? &s->signature.rsassa.sig : &s->signature.rsapss.sig;
        err = estc_buf_set(sig, rsig->buffer, rsig->size);
    }
out:
    Esys_Free(s);
    Esys_Free(pub);
    addr_clear(&a);
    return err;
}

static estc_err tpm2_key_remove(estc_ctx *ctx, void *state, const char *addr)
{
    struct tpm2_addr a;
    struct tpm2_conn *c;
    estc_err err = op_begin(ctx, state, addr, ADDR_KEY, &a, &c);
    if (err != ESTC_OK)
        return err;
    ESYS_TR tr = ESYS_TR_NONE, out_tr = ESYS_TR_NONE;
    TPM2B_PUBLIC *pub = NULL;
    /* key_open refuses storage keys: the SRK is never removed here. */
    err = key_open(ctx, c, addr, &a, &tr, &pub);
    if (err != ESTC_OK)
        goto out;
    TSS2_RC rc = Esys_EvictControl(c->esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                   ESYS_TR_NONE, a.handle, &out_tr);
    if (rc != TSS2_RC_SUCCESS)
        err = tss_err(ctx, addr, "Esys_EvictControl", rc);
out:
    Esys_Free(pub);
    /* ESYS may have dropped the handle already: closing again is harmless. */
    if (tr != ESYS_TR_NONE)
        key_forget(c, a.handle);
    tr_close(c, &out_tr);
    addr_clear(&a);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Certificates in NV indices                                                */
/* ------------------------------------------------------------------------ */

static estc_err nv_limits(estc_ctx *ctx, struct tpm2_conn *c, const char *addr)
{
    estc_err err = ESTC_OK;
    if (c->nv_buffer_max == 0)
        err = tpm_property(ctx, c, addr, TPM2_PT_NV_BUFFER_MAX, &c->nv_buffer_max);
    if (err == ESTC_OK && c->nv_index_max == 0)
        err = tpm_property(ctx, c, addr, TPM2_PT_NV_INDEX_MAX, &c->nv_index_max);
    if (err == ESTC_OK && (c->nv_buffer_max == 0 || c->nv_buffer_max > TPM2_MAX_NV_BUFFER_SIZE))
        c->nv_buffer_max = TPM2_MAX_NV_BUFFER_SIZE;
    return err;
}

static estc_err tpm2_cert_store(estc_ctx *ctx, void *state, const char *addr, estc_obj_kind kind,
                                const uint8_t *der, size_t der_len)
{
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: not a certificate kind", addr);
    if (der == NULL || der_len == 0)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: empty certificate", addr);
    struct tpm2_addr a;
    struct tpm2_conn *c;
    estc_err err = op_begin(ctx, state, addr, ADDR_NV, &a, &c);
    if (err != ESTC_OK)
        return err;
    ESYS_TR nv = ESYS_TR_NONE;
    err = nv_limits(ctx, c, addr);
    if (err == ESTC_OK && der_len > c->nv_index_max)
        err = estc_error(ctx, ESTC_ERR_LIMIT,
                         "%s: certificate of %zu bytes exceeds the TPM's NV index size of %u", addr,
                         der_len, (unsigned)c->nv_index_max);
    if (err == ESTC_OK)
        err = check_free(ctx, c, addr, &a);
    if (err != ESTC_OK)
        goto out;

    TPM2B_AUTH auth = {0};
    TPM2B_NV_PUBLIC info = {0};
    info.nvPublic.nvIndex = a.handle;
    info.nvPublic.nameAlg = TPM2_ALG_SHA256;
    info.nvPublic.attributes = TPMA_NV_OWNERWRITE | TPMA_NV_AUTHWRITE | TPMA_NV_OWNERREAD |
                               TPMA_NV_AUTHREAD | TPMA_NV_NO_DA |
                               (TPM2_NT_ORDINARY << TPMA_NV_TPM2_NT_SHIFT);
    info.nvPublic.dataSize = (UINT16)der_len;
    TSS2_RC rc = Esys_NV_DefineSpace(c->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                     ESYS_TR_NONE, &auth, &info, &nv);
    if (rc != TSS2_RC_SUCCESS) {
        err = tss_err(ctx, addr, "Esys_NV_DefineSpace", rc);
        goto out;
    }
    for (size_t off = 0; off < der_len;) {
        size_t n = der_len - off;
        if (n > c->nv_buffer_max)
            n = c->nv_buffer_max;
        TPM2B_MAX_NV_BUFFER chunk = {.size = (UINT16)n};
        memcpy(chunk.buffer, der + off, n);
        rc = Esys_NV_Write(c->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &chunk,
                           (UINT16)off);
        if (rc != TSS2_RC_SUCCESS) {
            err = tss_err(ctx, addr, "Esys_NV_Write", rc);
            /* Nothing may be left behind. */
            if (Esys_NV_UndefineSpace(c->esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                      ESYS_TR_NONE) == TSS2_RC_SUCCESS)
                nv = ESYS_TR_NONE;
            goto out;
        }
        off += n;
    }
out:
    tr_close(c, &nv);
    addr_clear(&a);
    return err;
}

static estc_err tpm2_cert_load(estc_ctx *ctx, void *state, const char *addr, estc_buf *der)
{
    if (der == NULL)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: no output buffer", addr);
    struct tpm2_addr a;
    struct tpm2_conn *c;
    estc_err err = op_begin(ctx, state, addr, ADDR_NV, &a, &c);
    if (err != ESTC_OK)
        return err;
    ESYS_TR nv = ESYS_TR_NONE;
    TPM2B_NV_PUBLIC *info = NULL;
    uint8_t *data = NULL;
    err = nv_limits(ctx, c, addr);
    if (err == ESTC_OK)
        err = tr_from(ctx, c, addr, a.handle, &nv);
    if (err != ESTC_OK)
        goto out;
    TSS2_RC rc =
        Esys_NV_ReadPublic(c->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &info, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        err = tss_err(ctx, addr, "Esys_NV_ReadPublic", rc);
        goto out;
    }
    size_t size = info->nvPublic.dataSize;
    if (!(info->nvPublic.attributes & TPMA_NV_WRITTEN) || size == 0 ||
        (info->nvPublic.attributes & TPMA_NV_TPM2_NT_MASK) !=
            (TPM2_NT_ORDINARY << TPMA_NV_TPM2_NT_SHIFT)) {
        err = estc_error(ctx, ESTC_ERR_NOT_FOUND, "%s: the NV index holds no data", addr);
        goto out;
    }
    data = malloc(size);
    if (data == NULL) {
        err = ESTC_ERR_NOMEM;
        goto out;
    }
    for (size_t off = 0; off < size;) {
        size_t n = size - off;
        if (n > c->nv_buffer_max)
            n = c->nv_buffer_max;
        TPM2B_MAX_NV_BUFFER *chunk = NULL;
        rc = Esys_NV_Read(c->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, (UINT16)n,
                          (UINT16)off, &chunk);
        if (rc != TSS2_RC_SUCCESS) {
            err = tss_err(ctx, addr, "Esys_NV_Read", rc);
            goto out;
        }
        bool ok = chunk->size == n;
        if (ok)
            memcpy(data + off, chunk->buffer, n);
        Esys_Free(chunk);
        if (!ok) {
            err = estc_error(ctx, ESTC_ERR_ENGINE, "%s: Esys_NV_Read: short read", addr);
            goto out;
        }
        off += n;
    }
    estc_buf_free(der);
    der->data = data;
    der->len = size;
    data = NULL;
out:
    free(data);
    Esys_Free(info);
    tr_close(c, &nv);
    addr_clear(&a);
    return err;
}

static estc_err tpm2_cert_remove(estc_ctx *ctx, void *state, const char *addr)
{
    struct tpm2_addr a;
    struct tpm2_conn *c;
    estc_err err = op_begin(ctx, state, addr, ADDR_NV, &a, &c);
    if (err != ESTC_OK)
        return err;
    ESYS_TR nv = ESYS_TR_NONE;
    err = tr_from(ctx, c, addr, a.handle, &nv);
    if (err == ESTC_OK) {
        TSS2_RC rc = Esys_NV_UndefineSpace(c->esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD,
                                           ESYS_TR_NONE, ESYS_TR_NONE);
        if (rc == TSS2_RC_SUCCESS)
            nv = ESYS_TR_NONE; /* ESYS dropped it */
        else
            err = tss_err(ctx, addr, "Esys_NV_UndefineSpace", rc);
    }
    tr_close(c, &nv);
    addr_clear(&a);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Derived addresses and listing                                             */
/* ------------------------------------------------------------------------ */

/* The handle range of @kind under prefix @a. */
static void kind_range(const struct tpm2_addr *a, estc_obj_kind kind, uint32_t *lo, uint32_t *hi)
{
    uint32_t half = (a->nv_hi - a->nv_lo + 1u) / 2u; /* nv_hi > nv_lo: at least 1 */
    if (a->nv_hi - a->nv_lo == 0xFFFFFFFFu)
        half = 0x80000000u;
    switch (kind) {
    case ESTC_OBJ_KEY:
        *lo = a->key_lo;
        *hi = a->key_hi;
        break;
    case ESTC_OBJ_CERT:
        *lo = a->nv_lo;
        *hi = a->nv_lo + half - 1u;
        break;
    default:
        *lo = a->nv_lo + half;
        *hi = a->nv_hi;
        break;
    }
}

/* "tpm2:handle=0x..." or "tpm2:nv=0x...", with the prefix's query. */
static estc_err compose(const struct tpm2_addr *a, estc_obj_kind kind, uint32_t h, char **out)
{
    const char *q = a->query != NULL ? a->query : "";
    size_t len = 32 + strlen(q);
    char *s = malloc(len);
    if (s == NULL)
        return ESTC_ERR_NOMEM;
    snprintf(s, len, "tpm2:%s=0x%08x%s%s", kind == ESTC_OBJ_KEY ? "handle" : "nv", (unsigned)h,
             q[0] != '\0' ? "?" : "", q);
    *out = s;
    return ESTC_OK;
}

static estc_err tpm2_address_derive(estc_ctx *ctx, void *state, const char *prefix,
                                    estc_obj_kind kind, const char *name, char **addr)
{
    (void)state;
    if (kind != ESTC_OBJ_KEY && kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: unknown object kind", prefix);
    if (name == NULL || addr == NULL)
        return ESTC_ERR_INVALID_ARG;
    struct tpm2_addr a;
    estc_err err = addr_object(ctx, prefix, ADDR_PREFIX, &a);
    if (err != ESTC_OK)
        return err;
    uint32_t lo, hi;
    kind_range(&a, kind, &lo, &hi);
    /* The kind is part of the hashed text, so a key and a certificate of the
     * same name land on unrelated slots. */
    char text[96];
    snprintf(text, sizeof(text), "estc-tpm2/%d/%s", (int)kind, name);
    char hex[9];
    err = estc__sha256_hex(text, strlen(text), hex, 8);
    if (err == ESTC_OK) {
        uint32_t v = (uint32_t)strtoul(hex, NULL, 16);
        uint64_t size = (uint64_t)hi - lo + 1u;
        err = compose(&a, kind, lo + (uint32_t)(v % size), addr);
    }
    addr_clear(&a);
    return err;
}

struct list_walk {
    const struct tpm2_addr *a;
    estc_obj_kind kind;
    estc_list_fn fn;
    void *arg;
    estc_err err;
};

static bool list_one(void *arg, uint32_t h)
{
    struct list_walk *w = arg;
    if (w->kind == ESTC_OBJ_KEY && h == w->a->srk)
        return true;
    char *addr = NULL;
    w->err = compose(w->a, w->kind, h, &addr);
    if (w->err != ESTC_OK)
        return false;
    bool more = w->fn(w->arg, addr, w->kind);
    free(addr);
    return more;
}

static estc_err tpm2_list(estc_ctx *ctx, void *state, const char *prefix, estc_obj_kind kind,
                          estc_list_fn fn, void *arg)
{
    if (fn == NULL || (kind != ESTC_OBJ_KEY && kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST))
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: bad list arguments", prefix);
    struct tpm2_addr a;
    struct tpm2_conn *c;
    estc_err err = op_begin(ctx, state, prefix, ADDR_PREFIX, &a, &c);
    if (err != ESTC_OK)
        return err;
    uint32_t lo, hi;
    kind_range(&a, kind, &lo, &hi);
    struct list_walk w = {&a, kind, fn, arg, ESTC_OK};
    err = handles_walk(ctx, c, prefix, lo, hi, list_one, &w);
    if (err == ESTC_OK)
        err = w.err;
    addr_clear(&a);
    return err;
}

static estc_err tpm2_exists(estc_ctx *ctx, void *state, const char *addr, estc_obj_kind kind,
                            bool *found)
{
    if (found == NULL)
        return ESTC_ERR_INVALID_ARG;
    *found = false;
    struct tpm2_addr a;
    estc_err err = addr_parse(ctx, addr, &a);
    if (err != ESTC_OK)
        return err;
    if (a.type == ADDR_PREFIX) {
        addr_clear(&a);
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: not an object address", addr);
    }
    /* A key address never holds a certificate and the reverse. */
    if ((a.type == ADDR_KEY) != (kind == ESTC_OBJ_KEY)) {
        addr_clear(&a);
        return ESTC_OK;
    }
    struct tpm2_conn *c;
    err = conn_get(ctx, state, addr, &a, &c);
    if (err == ESTC_OK)
        err = handle_present(ctx, c, addr, a.handle, found);
    addr_clear(&a);
    return err;
}

static void tpm2_cleanup(estc_ctx *ctx, void *state)
{
    (void)ctx;
    struct tpm2_state *st = state;
    for (size_t i = 0; i < st->n_conns; i++)
        conn_close(&st->conns[i]);
    free(st->conns);
    st->conns = NULL;
    st->n_conns = 0;
}

const struct estc_driver estc__driver_tpm2 = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "tpm2",
    .description = "TPM 2.0 (tpm2-tss ESAPI): persistent keys, certificates in NV indices",
    .state_size = sizeof(struct tpm2_state),
    .init = NULL,
    .cleanup = tpm2_cleanup,
    .key_generate = tpm2_key_generate,
    .key_import = tpm2_key_import,
    .key_public = tpm2_key_public,
    .key_sign = tpm2_key_sign,
    .key_remove = tpm2_key_remove,
    .cert_store = tpm2_cert_store,
    .cert_load = tpm2_cert_load,
    .cert_remove = tpm2_cert_remove,
    .list = tpm2_list,
    .exists = tpm2_exists,
    .address_derive = tpm2_address_derive,
};
