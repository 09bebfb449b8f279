/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificates on the token (end-entity and trust-store ones), whether an
 * object exists, and listing the objects under a prefix.
 */
#include "ckr.h"
#include "p11_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */
/* ------------------------------------------------------------------------ */

static estc_err i2d_dup(struct p11_op *op, int len, uint8_t *der, estc_buf *out)
{
    if (len <= 0 || der == NULL) {
        OPENSSL_free(der);
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: cannot encode a certificate field",
                          op->shown);
    }
    out->data = malloc((size_t)len);
    if (out->data == NULL) {
        OPENSSL_free(der);
        return estc__p11_nomem(op);
    }
    memcpy(out->data, der, (size_t)len);
    out->len = (size_t)len;
    OPENSSL_free(der);
    return ESTC_OK;
}

/* The CKA_ID for a new certificate: the address's id, else that of the key
 * with the same label, else the SHA-1 of the certificate's public key (as a
 * subject key identifier). */
static estc_err cert_id(struct p11_op *op, X509 *x, uint8_t id[64], CK_ULONG *id_len)
{
    bool given = false;
    estc_err err = estc__p11_uri_id(op, id, id_len, &given);
    if (err != ESTC_OK || given) {
        return err;
    }
    CK_OBJECT_HANDLE h;
    bool found = false;
    err = estc__p11_find_one(op, CKO_PRIVATE_KEY, &h, &found);
    if (err != ESTC_OK) {
        return err;
    }
    if (found) {
        CK_ATTRIBUTE a = {CKA_ID, id, 64};
        if (op->fn->C_GetAttributeValue(op->s, h, &a, 1) == CKR_OK && a.ulValueLen <= 64) {
            *id_len = a.ulValueLen;
            return ESTC_OK;
        }
    }
    unsigned int n = 0;
    if (X509_pubkey_digest(x, EVP_sha1(), id, &n) != 1) {
        return estc_error(op->ctx, ESTC_ERR_CRYPTO, "%s: cannot hash the public key", op->shown);
    }
    *id_len = n;
    return ESTC_OK;
}

/* The fields of a certificate that other PKCS#11 users look it up by. */
struct cert_fields {
    estc_buf subject, issuer, serial;
};

static estc_err cert_fields(struct p11_op *op, X509 *x, struct cert_fields *f)
{
    uint8_t *tmp = NULL;
    int n = i2d_X509_NAME(X509_get_subject_name(x), &tmp);
    estc_err err = i2d_dup(op, n, tmp, &f->subject);
    if (err == ESTC_OK) {
        tmp = NULL;
        n = i2d_X509_NAME(X509_get_issuer_name(x), &tmp);
        err = i2d_dup(op, n, tmp, &f->issuer);
    }
    if (err == ESTC_OK) {
        tmp = NULL;
        n = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &tmp);
        err = i2d_dup(op, n, tmp, &f->serial);
    }
    return err;
}

static estc_err cert_create(struct p11_op *op, estc_obj_kind kind, const uint8_t *der,
                            size_t der_len, const struct cert_fields *f, uint8_t *id,
                            CK_ULONG id_len)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG category = kind == ESTC_OBJ_TRUST ? CERT_CATEGORY_AUTHORITY : CERT_CATEGORY_USER;
    CK_ATTRIBUTE t[12];
    CK_ULONG nt = 0;
    t[nt++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    t[nt++] = (CK_ATTRIBUTE){CKA_CERTIFICATE_TYPE, &ct, sizeof(ct)};
    t[nt++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    t[nt++] = (CK_ATTRIBUTE){CKA_PRIVATE, &no, sizeof(no)};
    t[nt++] = *op->uri.label;
    t[nt++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};
    t[nt++] = (CK_ATTRIBUTE){CKA_SUBJECT, f->subject.data, f->subject.len};
    t[nt++] = (CK_ATTRIBUTE){CKA_ISSUER, f->issuer.data, f->issuer.len};
    t[nt++] = (CK_ATTRIBUTE){CKA_SERIAL_NUMBER, f->serial.data, f->serial.len};
    t[nt++] = (CK_ATTRIBUTE){CKA_VALUE, (void *)der, der_len};
    t[nt++] = (CK_ATTRIBUTE){CKA_CERTIFICATE_CATEGORY, &category, sizeof(category)};
    CK_OBJECT_HANDLE h;
    CK_RV rv = op->fn->C_CreateObject(op->s, t, nt, &h);
    if (rv != CKR_OK) {
        return estc__p11_fail(op, "C_CreateObject", rv);
    }
    if (kind != ESTC_OBJ_TRUST) {
        return ESTC_OK;
    }
    estc_err err = estc__p11_created(op, CKO_CERTIFICATE, &h);
    if (err != ESTC_OK) {
        return err;
    }
    /* CKA_TRUSTED is often reserved to the security officer (SoftHSM): then
     * the authority category alone marks the certificate. Set afterwards,
     * since a refused attribute at creation can leave a stray object behind
     * on some tokens. */
    CK_ATTRIBUTE tr = {CKA_TRUSTED, &yes, sizeof(yes)};
    CK_RV rv2 = op->fn->C_SetAttributeValue(op->s, h, &tr, 1);
    if (rv2 != CKR_OK) {
        estc_log(op->ctx, ESTC_LOG_DEBUG, "%s: CKA_TRUSTED not set: %s", op->shown,
                 estc__ckr_name(rv2) != NULL ? estc__ckr_name(rv2) : "?");
    }
    if (!estc__p11_cert_is_trust(op, h)) {
        estc__p11_destroy_quiet(op, h);
        return estc_error(op->ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: the token cannot mark a certificate as trusted", op->shown);
    }
    return ESTC_OK;
}

/* The certificate is read before the token is touched. */
estc_err estc__p11_cert_store(struct p11_op *op, estc_obj_kind kind, const uint8_t *der,
                              size_t der_len)
{
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST) {
        return estc_error(op->ctx, ESTC_ERR_INVALID_ARG, "%s: not a certificate kind", op->shown);
    }
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)der_len);
    if (x == NULL || p != der + der_len) {
        X509_free(x);
        return estc_error(op->ctx, ESTC_ERR_FORMAT, "%s: not one DER certificate", op->shown);
    }
    struct cert_fields f = {{0}, {0}, {0}};
    estc_err err = cert_fields(op, x, &f);
    if (err == ESTC_OK) {
        err = estc__p11_session(op);
    }
    CK_OBJECT_HANDLE h;
    bool found = false;
    if (err == ESTC_OK) {
        err = estc__p11_find_one(op, CKO_CERTIFICATE, &h, &found);
    }
    if (err == ESTC_OK && found) {
        err = estc_error(op->ctx, ESTC_ERR_EXISTS, "%s: a certificate is already there", op->shown);
    }
    uint8_t id[64];
    CK_ULONG id_len = 0;
    if (err == ESTC_OK) {
        err = cert_id(op, x, id, &id_len);
    }
    X509_free(x);
    if (err == ESTC_OK) {
        err = cert_create(op, kind, der, der_len, &f, id, id_len);
    }
    estc_buf_free(&f.subject);
    estc_buf_free(&f.issuer);
    estc_buf_free(&f.serial);
    return err;
}

estc_err estc__p11_cert_load(struct p11_op *op, estc_buf *der)
{
    CK_OBJECT_HANDLE h;
    bool found = false;
    estc_err err = estc__p11_find_one(op, CKO_CERTIFICATE, &h, &found);
    if (err == ESTC_OK && !found) {
        return estc__p11_not_found(op, "certificate");
    }
    if (err == ESTC_OK) {
        err = estc__p11_get_attr(op, h, CKA_VALUE, der);
    }
    return err;
}

estc_err estc__p11_cert_remove(struct p11_op *op)
{
    CK_ULONG n = 0;
    estc_err err = estc__p11_destroy_all(op, CKO_CERTIFICATE, &n);
    if (err == ESTC_OK && n == 0) {
        return estc__p11_not_found(op, "certificate");
    }
    return err;
}

/* ------------------------------------------------------------------------ */
/* Exists and list                                                           */
/* ------------------------------------------------------------------------ */

estc_err estc__p11_exists(struct p11_op *op, estc_obj_kind kind, bool *found)
{
    CK_OBJECT_HANDLE hs[16];
    CK_ULONG n = 0;
    estc_err err;
    *found = false;
    if (kind == ESTC_OBJ_KEY) {
        err = estc__p11_find_objects(op, CKO_PRIVATE_KEY, true, hs, 1, &n);
        if (err == ESTC_OK && n == 0) {
            err = estc__p11_find_objects(op, CKO_PUBLIC_KEY, true, hs, 1, &n);
        }
        *found = (err == ESTC_OK && n > 0);
        return err;
    }
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST) {
        return estc_error(op->ctx, ESTC_ERR_INVALID_ARG, "%s: unknown object kind", op->shown);
    }
    err = estc__p11_find_checked(op, CKO_CERTIFICATE, hs, 16, &n);
    for (CK_ULONG i = 0; err == ESTC_OK && i < n && !*found; i++) {
        *found = estc__p11_cert_is_trust(op, hs[i]) == (kind == ESTC_OBJ_TRUST);
    }
    return err;
}

struct addr_list {
    char **items;
    size_t n, cap;
};

static void addr_list_free(struct addr_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i]);
    }
    free(l->items);
}

static bool addr_list_push(struct addr_list *l, char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap != 0 ? 2 * l->cap : 16;
        char **items = realloc(l->items, cap * sizeof(*items));
        if (items == NULL) {
            return false;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = s;
    return true;
}

/* Add the address of the object labelled @label under the prefix. */
static estc_err collect_one(struct p11_op *op, const estc_buf *label, struct addr_list *l)
{
    char *a = NULL;
    estc_err err = estc__p11_uri_derive(op->addr, label->data, label->len, &a);
    if (err == ESTC_ERR_BAD_ADDRESS) {
        return ESTC_OK; /* a label too long for an address */
    }
    if (err != ESTC_OK) {
        return estc__p11_nomem(op);
    }
    if (!addr_list_push(l, a)) {
        free(a);
        return estc__p11_nomem(op);
    }
    return ESTC_OK;
}

/* The addresses of the objects of @kind on the prefix's token whose label
 * starts with the prefix's object= (when given). Collected first, so that the
 * callback may use the token. */
static estc_err collect(struct p11_op *op, estc_obj_kind kind, struct addr_list *l)
{
    const CK_ATTRIBUTE *want = op->uri.label;
    CK_OBJECT_CLASS cls = kind == ESTC_OBJ_KEY ? CKO_PRIVATE_KEY : CKO_CERTIFICATE;
    CK_OBJECT_HANDLE *hs = calloc(LIST_MAX_OBJECTS, sizeof(*hs));
    if (hs == NULL) {
        return estc__p11_nomem(op);
    }
    CK_ULONG n = 0;
    estc_err err = estc__p11_find_objects(op, cls, false, hs, LIST_MAX_OBJECTS, &n);
    for (CK_ULONG i = 0; err == ESTC_OK && i < n; i++) {
        if (kind != ESTC_OBJ_KEY &&
            estc__p11_cert_is_trust(op, hs[i]) != (kind == ESTC_OBJ_TRUST)) {
            continue;
        }
        estc_buf label = {0};
        if (estc__p11_get_attr(op, hs[i], CKA_LABEL, &label) != ESTC_OK) {
            /* An object without a label has no address of ours. */
            estc_ctx_clear_error(op->ctx);
            continue;
        }
        bool match = want == NULL || (label.len >= want->ulValueLen &&
                                      memcmp(label.data, want->pValue, want->ulValueLen) == 0);
        if (match && label.len > 0) {
            err = collect_one(op, &label, l);
        }
        estc_buf_free(&label);
    }
    free(hs);
    return err;
}

estc_err estc__p11_list(struct p11_op *op, estc_obj_kind kind, estc_list_fn fn, void *arg)
{
    struct addr_list l = {0};
    estc_err err = collect(op, kind, &l);
    for (size_t i = 0; err == ESTC_OK && i < l.n; i++) {
        if (!fn(arg, l.items[i], kind)) {
            break;
        }
    }
    addr_list_free(&l);
    return err;
}
