/* SPDX-License-Identifier: Apache-2.0 */
/*
 * psa: certificates, end-entity and trust store alike, as entries of PSA
 * Internal Trusted Storage holding their DER bytes unchanged.
 *
 * Keys share the uid namespace (mbed TLS files a key under its key id), so
 * nothing that is not a DER certificate is ever overwritten, read back or
 * removed through a uid= address.
 */
#include <stdlib.h>

#include <openssl/crypto.h>

#include "psa_internal.h"

/* One DER SEQUENCE filling exactly @n bytes: what a certificate entry holds.
 * Anything else (a key file sharing the namespace, foreign data) is refused. */
static bool is_der_sequence(const uint8_t *d, size_t n)
{
    size_t len, hdr;
    if (n < 2 || d[0] != 0x30)
        return false;
    if (d[1] < 0x80) {
        len = d[1];
        hdr = 2;
    } else {
        size_t k = d[1] & 0x7fu;
        if (k == 0 || k > 3 || n < 2 + k)
            return false;
        len = 0;
        for (size_t i = 0; i < k; i++)
            len = (len << 8) | d[2 + i];
        hdr = 2 + k;
    }
    return hdr + len == n;
}

/* The bytes of an entry that is no certificate are wiped: it may be a key. */
estc_err psa__read_cert(estc_ctx *ctx, const char *addr, psa_storage_uid_t uid, estc_buf *der)
{
    struct psa_storage_info_t info;
    psa_status_t s = psa_its_get_info(uid, &info);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, addr, "psa_its_get_info", s);
    if (info.size == 0 || info.size > PSA_CERT_MAX_LEN)
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: entry of %u bytes is no certificate", addr,
                          (unsigned)info.size);
    uint8_t *buf = malloc(info.size);
    if (buf == NULL)
        return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", addr);
    size_t got = 0;
    s = psa_its_get(uid, 0, info.size, buf, &got);
    if (s != PSA_SUCCESS || got != info.size || !is_der_sequence(buf, got)) {
        OPENSSL_cleanse(buf, info.size);
        free(buf);
        if (s != PSA_SUCCESS)
            return psa__fail(ctx, addr, "psa_its_get", s);
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: entry holds no DER certificate", addr);
    }
    der->data = buf;
    der->len = got;
    return ESTC_OK;
}

estc_err psa__cert_store(estc_ctx *ctx, void *state, const estc_address *addr, estc_obj_kind kind,
                         const uint8_t *der, size_t der_len)
{
    struct psa_target t;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_CERT, &t);
    if (err != ESTC_OK)
        return err;
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: object kind %d is no certificate", t.addr,
                          (int)kind);
    if (der == NULL || !is_der_sequence(der, der_len) || der_len > PSA_CERT_MAX_LEN)
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: not a DER certificate", t.addr);
    /* psa_its_set() replaces silently; an occupied uid (certificate or key)
     * must stay as it is. */
    struct psa_storage_info_t info;
    psa_status_t s = psa_its_get_info(t.uid, &info);
    if (s == PSA_SUCCESS)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: the uid is in use", t.addr);
    if (s != PSA_ERROR_DOES_NOT_EXIST)
        return psa__fail(ctx, t.addr, "psa_its_get_info", s);
    s = psa_its_set(t.uid, (uint32_t)der_len, der, PSA_STORAGE_FLAG_NONE);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, t.addr, "psa_its_set", s);
    return ESTC_OK;
}

estc_err psa__cert_load(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *der)
{
    struct psa_target t;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_CERT, &t);
    if (err != ESTC_OK)
        return err;
    return psa__read_cert(ctx, t.addr, t.uid, der);
}

estc_err psa__cert_remove(estc_ctx *ctx, void *state, const estc_address *addr)
{
    struct psa_target t;
    estc_err err = psa__begin(ctx, state, addr, PSA_FORM_CERT, &t);
    if (err != ESTC_OK)
        return err;
    /* Only certificate entries go: a key shares the namespace and must be
     * removed through psa_destroy_key(). */
    estc_buf cur = {0};
    err = psa__read_cert(ctx, t.addr, t.uid, &cur);
    estc_buf_free(&cur);
    if (err != ESTC_OK)
        return err;
    psa_status_t s = psa_its_remove(t.uid);
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, t.addr, "psa_its_remove", s);
    return ESTC_OK;
}
