/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tpm2: driver's certificates: one ordinary NV index per certificate,
 * exactly the DER's size, written and read in chunks the TPM accepts; and
 * the listing and existence of objects by handle.
 */
#include <stdlib.h>
#include <string.h>

#include "tpm2_internal.h"

/* The TPM's NV buffer and index sizes, asked once per connection. */
static estc_err nv_limits(const struct tpm2_op *op)
{
    struct tpm2_conn *c = op->c;
    estc_err err = ESTC_OK;
    if (c->nv_buffer_max == 0)
        err = estc__tpm2_property(op, TPM2_PT_NV_BUFFER_MAX, &c->nv_buffer_max);
    if (err == ESTC_OK && c->nv_index_max == 0)
        err = estc__tpm2_property(op, TPM2_PT_NV_INDEX_MAX, &c->nv_index_max);
    if (err == ESTC_OK && (c->nv_buffer_max == 0 || c->nv_buffer_max > TPM2_MAX_NV_BUFFER_SIZE))
        c->nv_buffer_max = TPM2_MAX_NV_BUFFER_SIZE;
    return err;
}

estc_err estc__tpm2_cert_store(const struct tpm2_op *op, const uint8_t *der, size_t der_len)
{
    struct tpm2_conn *c = op->c;
    ESYS_TR nv = ESYS_TR_NONE;
    estc_err err = nv_limits(op);
    if (err == ESTC_OK && der_len > c->nv_index_max)
        err = estc_error(op->ctx, ESTC_ERR_LIMIT,
                         "%s: certificate of %zu bytes exceeds the TPM's NV index size of %u",
                         op->text, der_len, (unsigned)c->nv_index_max);
    if (err == ESTC_OK)
        err = estc__tpm2_check_free(op);
    if (err != ESTC_OK)
        return err;

    TPM2B_AUTH auth = {0};
    TPM2B_NV_PUBLIC info = {0};
    info.nvPublic.nvIndex = op->a.handle;
    info.nvPublic.nameAlg = TPM2_ALG_SHA256;
    info.nvPublic.attributes = TPMA_NV_OWNERWRITE | TPMA_NV_AUTHWRITE | TPMA_NV_OWNERREAD |
                               TPMA_NV_AUTHREAD | TPMA_NV_NO_DA |
                               (TPM2_NT_ORDINARY << TPMA_NV_TPM2_NT_SHIFT);
    info.nvPublic.dataSize = (UINT16)der_len;
    TSS2_RC rc = Esys_NV_DefineSpace(c->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                     ESYS_TR_NONE, &auth, &info, &nv);
    if (rc != TSS2_RC_SUCCESS)
        return estc__tpm2_tss_err(op, "Esys_NV_DefineSpace", rc);
    for (size_t off = 0; off < der_len;) {
        size_t n = der_len - off;
        if (n > c->nv_buffer_max)
            n = c->nv_buffer_max;
        TPM2B_MAX_NV_BUFFER chunk = {.size = (UINT16)n};
        memcpy(chunk.buffer, der + off, n);
        rc = Esys_NV_Write(c->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &chunk,
                           (UINT16)off);
        if (rc != TSS2_RC_SUCCESS) {
            err = estc__tpm2_tss_err(op, "Esys_NV_Write", rc);
            /* Nothing may be left behind. */
            if (Esys_NV_UndefineSpace(c->esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                      ESYS_TR_NONE) == TSS2_RC_SUCCESS)
                nv = ESYS_TR_NONE;
            break;
        }
        off += n;
    }
    estc__tpm2_tr_close(c, &nv);
    return err;
}

/* Reads @size bytes of NV index @nv into @data. */
static estc_err nv_read(const struct tpm2_op *op, ESYS_TR nv, uint8_t *data, size_t size)
{
    struct tpm2_conn *c = op->c;
    for (size_t off = 0; off < size;) {
        size_t n = size - off;
        if (n > c->nv_buffer_max)
            n = c->nv_buffer_max;
        TPM2B_MAX_NV_BUFFER *chunk = NULL;
        TSS2_RC rc = Esys_NV_Read(c->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                  (UINT16)n, (UINT16)off, &chunk);
        if (rc != TSS2_RC_SUCCESS)
            return estc__tpm2_tss_err(op, "Esys_NV_Read", rc);
        bool ok = chunk->size == n;
        if (ok)
            memcpy(data + off, chunk->buffer, n);
        Esys_Free(chunk);
        if (!ok)
            return estc_error(op->ctx, ESTC_ERR_ENGINE, "%s: Esys_NV_Read: short read", op->text);
        off += n;
    }
    return ESTC_OK;
}

estc_err estc__tpm2_cert_load(const struct tpm2_op *op, estc_buf *der)
{
    struct tpm2_conn *c = op->c;
    ESYS_TR nv = ESYS_TR_NONE;
    TPM2B_NV_PUBLIC *info = NULL;
    uint8_t *data = NULL;
    estc_err err = nv_limits(op);
    if (err == ESTC_OK)
        err = estc__tpm2_tr_from(op, op->a.handle, &nv);
    if (err != ESTC_OK)
        goto out;
    TSS2_RC rc =
        Esys_NV_ReadPublic(c->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &info, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        err = estc__tpm2_tss_err(op, "Esys_NV_ReadPublic", rc);
        goto out;
    }
    size_t size = info->nvPublic.dataSize;
    if (!(info->nvPublic.attributes & TPMA_NV_WRITTEN) || size == 0 ||
        (info->nvPublic.attributes & TPMA_NV_TPM2_NT_MASK) !=
            (TPM2_NT_ORDINARY << TPMA_NV_TPM2_NT_SHIFT)) {
        err = estc_error(op->ctx, ESTC_ERR_NOT_FOUND, "%s: the NV index holds no data", op->text);
        goto out;
    }
    data = malloc(size);
    if (data == NULL) {
        err = ESTC_ERR_NOMEM;
        goto out;
    }
    err = nv_read(op, nv, data, size);
    if (err != ESTC_OK)
        goto out;
    estc_buf_free(der);
    der->data = data;
    der->len = size;
    data = NULL;
out:
    free(data);
    Esys_Free(info);
    estc__tpm2_tr_close(c, &nv);
    return err;
}

estc_err estc__tpm2_cert_remove(const struct tpm2_op *op)
{
    struct tpm2_conn *c = op->c;
    ESYS_TR nv = ESYS_TR_NONE;
    estc_err err = estc__tpm2_tr_from(op, op->a.handle, &nv);
    if (err == ESTC_OK) {
        TSS2_RC rc = Esys_NV_UndefineSpace(c->esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD,
                                           ESYS_TR_NONE, ESYS_TR_NONE);
        if (rc == TSS2_RC_SUCCESS)
            nv = ESYS_TR_NONE; /* ESYS dropped it */
        else
            err = estc__tpm2_tss_err(op, "Esys_NV_UndefineSpace", rc);
    }
    estc__tpm2_tr_close(c, &nv);
    return err;
}

/* ------------------------------------------------------------------------ */
/* Listing and existence                                                     */
/* ------------------------------------------------------------------------ */

struct list_walk {
    const struct tpm2_op *op;
    estc_obj_kind kind;
    estc_list_fn fn;
    void *arg;
    estc_err err;
};

static bool list_one(void *arg, uint32_t h)
{
    struct list_walk *w = arg;
    if (w->kind == ESTC_OBJ_KEY && h == w->op->a.srk)
        return true;
    char *addr = NULL;
    w->err = estc__tpm2_compose(w->op, w->kind, h, &addr);
    if (w->err != ESTC_OK)
        return false;
    bool more = w->fn(w->arg, addr, w->kind);
    free(addr);
    return more;
}

estc_err estc__tpm2_list(const struct tpm2_op *op, estc_obj_kind kind, estc_list_fn fn, void *arg)
{
    if (kind == ESTC_OBJ_KEY && op->a.key_dir != NULL)
        return estc__tpm2_keyfile_list(op, fn, arg);
    uint32_t lo, hi;
    estc__tpm2_kind_range(&op->a, kind, &lo, &hi);
    struct list_walk w = {op, kind, fn, arg, ESTC_OK};
    estc_err err = estc__tpm2_handles_walk(op, lo, hi, list_one, &w);
    return err == ESTC_OK ? w.err : err;
}

estc_err estc__tpm2_exists(const struct tpm2_op *op, bool *found)
{
    return estc__tpm2_handle_present(op, op->a.handle, found);
}
