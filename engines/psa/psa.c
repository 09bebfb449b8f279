/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The "psa" driver: keys, certificates and trust-store certificates through
 * the PSA Crypto API (mbed TLS 2.28's libmbedcrypto). See
 * docs/engines/psa.md, and psa_internal.h for how the files divide the work.
 *
 * This file holds what spans keys and certificates (list, exists,
 * address_derive) and the driver table.
 */
#include <stdlib.h>
#include <string.h>

#include "psa_internal.h"

static estc_err psa_drv_list(estc_ctx *ctx, void *state, const estc_address *prefix,
                             estc_obj_kind kind, estc_list_fn fn, void *arg)
{
    struct psa_target t;
    estc_err err = psa__begin(ctx, state, prefix, PSA_FORM_PREFIX, &t);
    if (err != ESTC_OK)
        return err;
    if (fn == NULL || kind < ESTC_OBJ_KEY || kind > ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: bad list arguments", t.addr);
    const struct psa_range *r = psa__range_of(&t, kind);
    char addr[PSA_ADDR_BUF];
    for (uint64_t id = r->lo;; id++) {
        bool found = false;
        psa__compose(kind, id, addr);
        if (kind == ESTC_OBJ_KEY) {
            found = psa__key_probe(mbedtls_svc_key_id_make(0, (psa_key_id_t)id)) == PSA_SUCCESS;
        } else {
            struct psa_storage_info_t info;
            if (psa_its_get_info(id, &info) == PSA_SUCCESS) {
                estc_buf der = {0};
                /* Foreign entries in the range (keys, other data) are not ours. */
                found = psa__read_cert(NULL, addr, id, &der) == ESTC_OK;
                estc_buf_free(&der);
            }
        }
        if (found && !fn(arg, addr, kind))
            break;
        if (id == r->hi)
            break;
    }
    return ESTC_OK;
}

static estc_err psa_drv_exists(estc_ctx *ctx, void *state, const estc_address *addr,
                               estc_obj_kind kind, bool *found)
{
    *found = false;
    if (kind < ESTC_OBJ_KEY || kind > ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: unknown object kind %d", addr->text,
                          (int)kind);
    struct psa_target t;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_KEY | PSA_FORM_CERT, &t);
    if (err != ESTC_OK)
        return err;
    /* A well-formed address of the other form (a key id when a certificate
     * is asked for, or the reverse) holds no object of @kind: generic
     * callers such as the provider's STORE ask for both kinds. */
    if ((kind == ESTC_OBJ_KEY) != (t.form == PSA_FORM_KEY))
        return ESTC_OK;
    if (kind == ESTC_OBJ_KEY) {
        psa_status_t s = psa__key_probe(t.key_id);
        /* DATA_INVALID: the uid holds an ITS entry that is not a key. */
        if (s == PSA_SUCCESS)
            *found = true;
        else if (s != PSA_ERROR_DOES_NOT_EXIST && s != PSA_ERROR_INVALID_HANDLE &&
                 s != PSA_ERROR_DATA_INVALID)
            return psa__fail(ctx, t.addr, "psa_get_key_attributes", s);
        return ESTC_OK;
    }
    struct psa_storage_info_t info;
    psa_status_t s = psa_its_get_info(t.uid, &info);
    if (s == PSA_ERROR_DOES_NOT_EXIST)
        return ESTC_OK;
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, t.addr, "psa_its_get_info", s);
    estc_buf der = {0};
    err = psa__read_cert(NULL, t.addr, t.uid, &der);
    estc_buf_free(&der);
    *found = err == ESTC_OK;
    return ESTC_OK;
}

static estc_err psa_drv_address_derive(estc_ctx *ctx, void *state, const estc_address *prefix,
                                       estc_obj_kind kind, const char *name, char **addr)
{
    (void)state;
    struct psa_target t;
    /* No state: deriving reads the prefix only and leaves PSA alone. */
    estc_err err = psa__begin(ctx, NULL, prefix, PSA_FORM_PREFIX, &t);
    if (err != ESTC_OK)
        return err;
    if (name == NULL || addr == NULL || kind < ESTC_OBJ_KEY || kind > ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: bad derive arguments", t.addr);
    /* The same name always lands on the same id, and distinct names rarely
     * meet (then the create reports ESTC_ERR_EXISTS). */
    uint64_t id = 0;
    err = psa__pick_id(psa__range_of(&t, kind), name, &id);
    if (err != ESTC_OK)
        return estc_error(ctx, err, "%s: hashing the name failed", t.addr);
    char buf[PSA_ADDR_BUF];
    psa__compose(kind, id, buf);
    *addr = strdup(buf);
    if (*addr == NULL)
        return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", t.addr);
    return ESTC_OK;
}

static estc_err psa_drv_init(estc_ctx *ctx, void *state)
{
    (void)ctx;
    ((struct psa_state *)state)->ready = false;
    return ESTC_OK;
}

const struct estc_driver estc__driver_psa = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "psa",
    .description = "PSA Crypto API (mbed TLS): persistent keys and ITS certificates",
    .state_size = sizeof(struct psa_state),
    .caps = ESTC_CAP_ATTRIBUTES,
    .init = psa_drv_init,
    .cleanup = NULL,
    .key_generate = psa__key_generate,
    .key_import = psa__key_import,
    .key_public = psa__key_public,
    .key_sign = psa__key_sign,
    .key_remove = psa__key_remove,
    .cert_store = psa__cert_store,
    .cert_load = psa__cert_load,
    .cert_remove = psa__cert_remove,
    .list = psa_drv_list,
    .exists = psa_drv_exists,
    .address_derive = psa_drv_address_derive,
};
