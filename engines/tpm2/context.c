/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tpm2: driver's TPM connections: one TCTI and ESYS context per TCTI
 * string, TSS error mapping, handle queries, closing and flushing ESYS_TRs,
 * the cache of open key handles and the storage primary key (SRK).
 *
 * Every command uses password authorization: the owner hierarchy's password
 * from owner-auth-source= (or ESTC_TPM2_OWNER_AUTH_FILE), the parent key's
 * from parent-auth-source=, the empty password for everything else.
 * Transient objects exist only inside one operation and are flushed before
 * it returns: a TPM without a resource manager has as few as three
 * transient slots.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "tpm2_internal.h"
#include "util.h"

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

estc_err estc__tpm2_tss_err(const struct tpm2_op *op, const char *call, TSS2_RC rc)
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
    if (err == ESTC_ERR_AUTH)
        return estc_error(op->ctx, err,
                          "%s: %s: %s (a wrong or missing owner or parent password? see "
                          "owner-auth-source, parent-auth-source)",
                          op->text, call, Tss2_RC_Decode(rc));
    return estc_error(op->ctx, err, "%s: %s: %s", op->text, call, Tss2_RC_Decode(rc));
}

/* ------------------------------------------------------------------------ */
/* Passwords                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * Reads the password in file @path (@what names it in messages, never its
 * content; a plain path or a file: URI, as pkcs11:'s pin-source) into @out,
 * under the one rule for files holding secrets (estc__read_secret_file():
 * a regular file, not a symbolic link, with no access for others and not
 * writable by its group; one trailing newline dropped), at most
 * sizeof(out->buffer) bytes.
 */
static estc_err read_secret(const struct tpm2_op *op, const char *what, const char *path,
                            TPM2B_AUTH *out)
{
    memset(out, 0, sizeof(*out));
    estc_buf pw = {0};
    estc_err err = estc__read_secret_file(op->ctx, op->text, what, estc__file_uri_path(path),
                                          ESTC__FILE_SECRET, sizeof(out->buffer), &pw);
    if (err != ESTC_OK)
        return err;
    memcpy(out->buffer, pw.data, pw.len);
    out->size = (UINT16)pw.len;
    estc_buf_free(&pw);
    return ESTC_OK;
}

estc_err estc__tpm2_auth_begin(struct tpm2_op *op)
{
    const char *owner = op->a.owner_auth_src;
    const char *owner_what = "owner-auth-source";
    if (owner == NULL) {
        const char *env = getenv("ESTC_TPM2_OWNER_AUTH_FILE");
        if (env != NULL && env[0] != '\0') {
            owner = env;
            owner_what = "ESTC_TPM2_OWNER_AUTH_FILE";
        }
    }
    estc_err err = ESTC_OK;
    if (owner != NULL)
        err = read_secret(op, owner_what, owner, &op->owner_auth);
    if (err == ESTC_OK && op->a.parent_auth_src != NULL)
        err = read_secret(op, "parent-auth-source", op->a.parent_auth_src, &op->parent_auth);
    if (err == ESTC_OK) {
        /* Always set, also to the empty password: the connection is shared
         * by every address naming the same TCTI. */
        TSS2_RC rc = Esys_TR_SetAuth(op->c->esys, ESYS_TR_RH_OWNER, &op->owner_auth);
        if (rc != TSS2_RC_SUCCESS)
            err = estc__tpm2_tss_err(op, "Esys_TR_SetAuth(owner)", rc);
    }
    if (err != ESTC_OK)
        estc__tpm2_auth_end(op);
    return err;
}

void estc__tpm2_auth_end(struct tpm2_op *op)
{
    static const TPM2B_AUTH empty;
    if (op->c != NULL) {
        /* ESYS keeps a copy: overwrite it with the empty password. */
        Esys_TR_SetAuth(op->c->esys, ESYS_TR_RH_OWNER, &empty);
        if (op->c->srk_tr != ESYS_TR_NONE)
            Esys_TR_SetAuth(op->c->esys, op->c->srk_tr, &empty);
    }
    OPENSSL_cleanse(&op->owner_auth, sizeof(op->owner_auth));
    OPENSSL_cleanse(&op->parent_auth, sizeof(op->parent_auth));
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

estc_err estc__tpm2_connect(struct tpm2_op *op, struct tpm2_state *st)
{
    const char *conf = tcti_for(&op->a);
    for (size_t i = 0; i < st->n_conns; i++) {
        if (strcmp(st->conns[i].tcti, conf) == 0) {
            op->c = &st->conns[i];
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
        return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: Tss2_TctiLdr_Initialize(\"%s\"): %s",
                          op->text, conf[0] != '\0' ? conf : "default", Tss2_RC_Decode(rc));
    }
    rc = Esys_Initialize(&c.esys, c.tcti_ctx, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        conn_close(&c);
        return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: Esys_Initialize: %s", op->text,
                          Tss2_RC_Decode(rc));
    }
    /* A TPM already started answers TPM2_RC_INITIALIZE; any real failure
     * shows in the next command. */
    rc = Esys_Startup(c.esys, TPM2_SU_CLEAR);
    if (rc != TSS2_RC_SUCCESS && rc_base(rc) != TPM2_RC_INITIALIZE)
        estc_log(op->ctx, ESTC_LOG_DEBUG, "%s: Esys_Startup: %s", op->text, Tss2_RC_Decode(rc));
    struct tpm2_conn *grown = realloc(st->conns, (st->n_conns + 1) * sizeof(*grown));
    if (grown == NULL) {
        conn_close(&c);
        return ESTC_ERR_NOMEM;
    }
    st->conns = grown;
    st->conns[st->n_conns] = c;
    op->c = &st->conns[st->n_conns++];
    return ESTC_OK;
}

void estc__tpm2_disconnect_all(struct tpm2_state *st)
{
    for (size_t i = 0; i < st->n_conns; i++)
        conn_close(&st->conns[i]);
    free(st->conns);
    st->conns = NULL;
    st->n_conns = 0;
}

estc_err estc__tpm2_property(const struct tpm2_op *op, TPM2_PT pt, uint32_t *value)
{
    TPMS_CAPABILITY_DATA *cap = NULL;
    TSS2_RC rc = Esys_GetCapability(op->c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                    TPM2_CAP_TPM_PROPERTIES, pt, 1, NULL, &cap);
    if (rc != TSS2_RC_SUCCESS)
        return estc__tpm2_tss_err(op, "Esys_GetCapability", rc);
    bool ok =
        cap->data.tpmProperties.count > 0 && cap->data.tpmProperties.tpmProperty[0].property == pt;
    if (ok)
        *value = cap->data.tpmProperties.tpmProperty[0].value;
    Esys_Free(cap);
    if (!ok)
        return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: TPM property 0x%x missing", op->text,
                          (unsigned)pt);
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Handles                                                                   */
/* ------------------------------------------------------------------------ */

estc_err estc__tpm2_handles_walk(const struct tpm2_op *op, uint32_t lo, uint32_t hi,
                                 bool (*fn)(void *arg, uint32_t h), void *arg)
{
    uint32_t next = lo;
    for (;;) {
        TPMS_CAPABILITY_DATA *cap = NULL;
        TPMI_YES_NO more = TPM2_NO;
        TSS2_RC rc = Esys_GetCapability(op->c->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                        TPM2_CAP_HANDLES, next, TPM2_MAX_CAP_HANDLES, &more, &cap);
        if (rc != TSS2_RC_SUCCESS)
            return estc__tpm2_tss_err(op, "Esys_GetCapability", rc);
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

estc_err estc__tpm2_handle_present(const struct tpm2_op *op, uint32_t h, bool *present)
{
    uint32_t found = 0;
    estc_err err = estc__tpm2_handles_walk(op, h, h, first_handle, &found);
    *present = err == ESTC_OK && found == h;
    return err;
}

estc_err estc__tpm2_check_free(const struct tpm2_op *op)
{
    const struct tpm2_addr *a = &op->a;
    bool present = false;
    estc_err err = estc__tpm2_handle_present(op, a->handle, &present);
    if (err != ESTC_OK)
        return err;
    if (present)
        return estc_error(op->ctx, ESTC_ERR_EXISTS, "%s: handle 0x%08x is in use", op->text,
                          (unsigned)a->handle);
    if (a->type == ADDR_KEY && a->handle == a->srk)
        return estc_error(op->ctx, ESTC_ERR_EXISTS, "%s: 0x%08x is the storage primary key handle",
                          op->text, (unsigned)a->handle);
    return ESTC_OK;
}

estc_err estc__tpm2_tr_from(const struct tpm2_op *op, uint32_t h, ESYS_TR *tr)
{
    /* Asking first keeps ESYS from logging an error for a missing handle. */
    bool present = false;
    estc_err err = estc__tpm2_handle_present(op, h, &present);
    if (err != ESTC_OK)
        return err;
    if (!present)
        return estc_error(op->ctx, ESTC_ERR_NOT_FOUND, "%s: no object at 0x%08x", op->text,
                          (unsigned)h);
    TSS2_RC rc =
        Esys_TR_FromTPMPublic(op->c->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr);
    if (rc == TSS2_RC_SUCCESS)
        return ESTC_OK;
    if (rc_is_handle(rc))
        return estc_error(op->ctx, ESTC_ERR_NOT_FOUND, "%s: no object at 0x%08x: %s", op->text,
                          (unsigned)h, Tss2_RC_Decode(rc));
    return estc__tpm2_tss_err(op, "Esys_TR_FromTPMPublic", rc);
}

void estc__tpm2_tr_close(struct tpm2_conn *c, ESYS_TR *tr)
{
    if (*tr != ESYS_TR_NONE)
        Esys_TR_Close(c->esys, tr);
    *tr = ESYS_TR_NONE;
}

void estc__tpm2_flush(struct tpm2_conn *c, ESYS_TR *tr)
{
    if (*tr != ESYS_TR_NONE)
        Esys_FlushContext(c->esys, *tr);
    *tr = ESYS_TR_NONE;
}

struct tpm2_key *estc__tpm2_key_find(struct tpm2_conn *c, uint32_t handle)
{
    for (size_t i = 0; i < c->n_keys; i++) {
        if (c->keys[i].handle == handle)
            return &c->keys[i];
    }
    return NULL;
}

void estc__tpm2_key_forget(struct tpm2_conn *c, uint32_t handle)
{
    for (size_t i = 0; i < c->n_keys; i++) {
        if (c->keys[i].handle == handle) {
            estc__tpm2_tr_close(c, &c->keys[i].tr);
            c->keys[i] = c->keys[--c->n_keys];
            return;
        }
    }
}

struct tpm2_key *estc__tpm2_key_remember(struct tpm2_conn *c, uint32_t handle, ESYS_TR tr,
                                         const TPM2B_PUBLIC *pub)
{
    if (c->n_keys == KEY_CACHE) {
        /* Full: drop the oldest entry. */
        estc__tpm2_tr_close(c, &c->keys[0].tr);
        memmove(&c->keys[0], &c->keys[1], (KEY_CACHE - 1) * sizeof(c->keys[0]));
        c->n_keys--;
    }
    struct tpm2_key *k = &c->keys[c->n_keys++];
    k->handle = handle;
    k->tr = tr;
    k->pub = *pub;
    return k;
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

estc_err estc__tpm2_srk_get(const struct tpm2_op *op, ESYS_TR *srk)
{
    struct tpm2_conn *c = op->c;
    uint32_t handle = op->a.srk;
    if (c->srk_tr != ESYS_TR_NONE && c->srk_handle == handle) {
        *srk = c->srk_tr;
        return estc__tpm2_set_parent_auth(op, *srk);
    }
    estc__tpm2_tr_close(c, &c->srk_tr);
    estc_err err = estc__tpm2_tr_from(op, handle, srk);
    if (err == ESTC_OK) {
        c->srk_tr = *srk;
        c->srk_handle = handle;
        return estc__tpm2_set_parent_auth(op, *srk);
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
        return estc__tpm2_tss_err(op, "Esys_CreatePrimary(srk)", rc);
    rc = Esys_EvictControl(c->esys, ESYS_TR_RH_OWNER, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                           ESYS_TR_NONE, handle, srk);
    estc__tpm2_flush(c, &primary);
    if (rc != TSS2_RC_SUCCESS)
        return estc__tpm2_tss_err(op, "Esys_EvictControl(srk)", rc);
    estc_log(op->ctx, ESTC_LOG_INFO, "%s: created the storage primary key at 0x%08x", op->text,
             (unsigned)handle);
    c->srk_tr = *srk;
    c->srk_handle = handle;
    return estc__tpm2_set_parent_auth(op, *srk);
}

estc_err estc__tpm2_set_parent_auth(const struct tpm2_op *op, ESYS_TR parent)
{
    TSS2_RC rc = Esys_TR_SetAuth(op->c->esys, parent, &op->parent_auth);
    return rc == TSS2_RC_SUCCESS ? ESTC_OK : estc__tpm2_tss_err(op, "Esys_TR_SetAuth(parent)", rc);
}

/* The cached SRK is dropped when a command using it failed: it may have been
 * evicted by someone else, and the next operation opens it afresh. */
void estc__tpm2_srk_check(struct tpm2_conn *c, estc_err err)
{
    if (err == ESTC_ERR_NOT_FOUND || err == ESTC_ERR_ENGINE)
        estc__tpm2_tr_close(c, &c->srk_tr);
}
