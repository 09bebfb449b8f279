/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Validation of what the server issued, before anything is committed.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "client_internal.h"

void estc__x509_remember(estc_client *c, const estc_buf *der, X509 *x)
{
    for (size_t i = 0; i < c->n_x509_memo; i++) {
        struct estc__x509_memo *m = &c->x509_memo[i];
        if (m->der.len == der->len && memcmp(m->der.data, der->data, der->len) == 0)
            return;
    }
    /* Remembered when there is room, or in place of the oldest one. */
    size_t slot = c->n_x509_memo;
    if (slot == sizeof(c->x509_memo) / sizeof(c->x509_memo[0])) {
        slot = c->x509_memo_next;
        c->x509_memo_next = (slot + 1) % (sizeof(c->x509_memo) / sizeof(c->x509_memo[0]));
    }
    estc_buf copy = {0};
    if (estc_buf_set(&copy, der->data, der->len) != ESTC_OK || X509_up_ref(x) != 1) {
        estc_buf_free(&copy);
        return; /* parsed, just not remembered */
    }
    if (slot < c->n_x509_memo) {
        estc_buf_free(&c->x509_memo[slot].der);
        X509_free(c->x509_memo[slot].x509);
    } else {
        c->n_x509_memo++;
    }
    c->x509_memo[slot] = (struct estc__x509_memo){.der = copy, .x509 = x};
}

X509 *estc__x509_cached(estc_client *c, const estc_buf *der)
{
    for (size_t i = 0; i < c->n_x509_memo; i++) {
        struct estc__x509_memo *m = &c->x509_memo[i];
        if (m->der.len == der->len && memcmp(m->der.data, der->data, der->len) == 0)
            return X509_up_ref(m->x509) == 1 ? m->x509 : NULL;
    }
    const unsigned char *p = der->data;
    X509 *x = d2i_X509(NULL, &p, (long)der->len);
    if (x != NULL)
        estc__x509_remember(c, der, x);
    return x;
}

void estc__x509_cache_free(estc_client *c)
{
    for (size_t i = 0; i < c->n_x509_memo; i++) {
        estc_buf_free(&c->x509_memo[i].der);
        X509_free(c->x509_memo[i].x509);
    }
    c->n_x509_memo = 0;
    c->x509_memo_next = 0;
}

static bool add_certs(estc_client *c, X509_STORE *store, const estc__der_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        X509 *x = estc__x509_cached(c, &list->items[i]);
        bool ok = x != NULL && X509_STORE_add_cert(store, x) == 1;
        X509_free(x);
        if (!ok)
            return false;
    }
    return true;
}

estc_err estc__trust_store(estc_client *c, X509_STORE **out)
{
    X509_STORE *store = X509_STORE_new();
    bool ok = store != NULL;
    if (ok && c->have_explicit)
        ok = add_certs(c, store, &c->explicit_certs);
    for (size_t i = 0; ok && i < c->n_anchors; i++) {
        if (!c->anchors[i].implicit || !c->have_explicit)
            ok = add_certs(c, store, &c->anchors[i].certs);
    }
    ERR_clear_error(); /* a certificate present twice is not an error */
    if (!ok) {
        X509_STORE_free(store);
        return ESTC_ERR_NOMEM;
    }
    *out = store;
    return ESTC_OK;
}

/* The subjectAltName extension's DER, or an empty buffer when absent. */
static estc_err san_der(X509 *x, estc_buf *out)
{
    int idx = X509_get_ext_by_NID(x, NID_subject_alt_name, -1);
    if (idx < 0)
        return ESTC_OK;
    ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(X509_get_ext(x, idx));
    return estc_buf_set(out, ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
}

/*
 * RFC 7030 4.2.2: Subject and subjectAltName stay identical. Compared as DER:
 * X509_NAME_cmp folds case and white space, so CN=DEV1 would pass for CN=dev1.
 */
static estc_err same_identity(estc_client *c, X509 *issued, X509 *old)
{
    const unsigned char *na = NULL, *nb = NULL;
    size_t la = 0, lb = 0;
    if (X509_NAME_get0_der(X509_get_subject_name(issued), &na, &la) != 1 ||
        X509_NAME_get0_der(X509_get_subject_name(old), &nb, &lb) != 1) {
        ERR_clear_error();
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "a certificate's Subject does not encode");
    }
    if (la != lb || memcmp(na, nb, la) != 0)
        return estc_error(c->ctx, ESTC_ERR_VALIDATION,
                          "re-enrollment changed the certificate's Subject");
    estc_buf a = {0}, b = {0};
    estc_err err = san_der(issued, &a);
    if (err == ESTC_OK)
        err = san_der(old, &b);
    if (err == ESTC_OK && (a.len != b.len || (a.len > 0 && memcmp(a.data, b.data, a.len) != 0)))
        err = estc_error(c->ctx, ESTC_ERR_VALIDATION,
                         "re-enrollment changed the certificate's subjectAltName");
    estc_buf_free(&a);
    estc_buf_free(&b);
    return err;
}

/* Whether @x carries the key of @spki: byte for byte (the usual case: the
 * CA copies the request's SubjectPublicKeyInfo), else, with @by_key, as the
 * same key written otherwise (decoded once into *@ours). */
static bool carries_key(const X509 *x, const estc_buf *spki, bool by_key, EVP_PKEY **ours)
{
    unsigned char *der = NULL;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    bool same = n > 0 && (size_t)n == spki->len && memcmp(der, spki->data, spki->len) == 0;
    OPENSSL_free(der);
    if (same || !by_key)
        return same;
    if (*ours == NULL) {
        const unsigned char *p = spki->data;
        *ours = d2i_PUBKEY(NULL, &p, (long)spki->len);
    }
    return *ours != NULL && EVP_PKEY_eq(X509_get0_pubkey(x), *ours) == 1;
}

estc_err estc__validate_issued(estc_client *c, const estc__der_list *certs, const estc_buf *spki,
                               X509 *old, size_t *leaf)
{
    EVP_PKEY *ours = NULL;
    X509 *issued = NULL;
    STACK_OF(X509) *others = sk_X509_new_null();
    X509 **all = calloc(certs->n > 0 ? certs->n : 1, sizeof(*all));
    estc_err err = others == NULL || all == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    /* Remembered by the client: the provisioning view of the issued
     * certificate then reads the same object, not a new parse. */
    for (size_t i = 0; i < certs->n && err == ESTC_OK; i++) {
        all[i] = estc__x509_cached(c, &certs->items[i]);
        if (all[i] == NULL)
            err = estc_error(c->ctx, ESTC_ERR_FORMAT, "certificate %zu does not parse", i);
    }
    /* The issued one: by its encoding first, by its key only if none is. */
    for (int pass = 0; pass < 2 && err == ESTC_OK && issued == NULL; pass++) {
        for (size_t i = 0; i < certs->n && issued == NULL; i++) {
            if (carries_key(all[i], spki, pass == 1, &ours)) {
                issued = all[i];
                all[i] = NULL;
                *leaf = i;
            }
        }
    }
    for (size_t i = 0; i < certs->n && err == ESTC_OK; i++) {
        if (all[i] != NULL && sk_X509_push(others, all[i]) <= 0)
            err = ESTC_ERR_NOMEM;
        else
            all[i] = NULL;
    }
    for (size_t i = 0; all != NULL && i < certs->n; i++)
        X509_free(all[i]);
    free(all);
    ERR_clear_error();
    if (err == ESTC_OK && issued == NULL)
        err = estc_error(c->ctx, ESTC_ERR_VALIDATION,
                         "the server issued a certificate for another key than the "
                         "request's");
    X509_STORE *store = NULL;
    X509_STORE_CTX *sctx = NULL;
    if (err == ESTC_OK)
        err = estc__trust_store(c, &store);
    if (err == ESTC_OK) {
        sctx = X509_STORE_CTX_new();
        if (sctx == NULL || X509_STORE_CTX_init(sctx, store, issued, others) != 1)
            err = ESTC_ERR_NOMEM;
    }
    /* X509_verify_cert also checks that the validity period is current. */
    if (err == ESTC_OK && X509_verify_cert(sctx) != 1) {
        int code = X509_STORE_CTX_get_error(sctx);
        err = estc_error(c->ctx, ESTC_ERR_VALIDATION, "issued certificate: %s",
                         X509_verify_cert_error_string(code));
    }
    if (err == ESTC_OK && old != NULL)
        err = same_identity(c, issued, old);
    ERR_clear_error();
    X509_STORE_CTX_free(sctx);
    X509_STORE_free(store);
    sk_X509_pop_free(others, X509_free);
    X509_free(issued);
    EVP_PKEY_free(ours);
    return err;
}
