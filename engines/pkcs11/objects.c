/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Objects on the token: finding them by class, label and id, reading their
 * attributes, the per-token cache of found handles, and removal.
 */
#include "p11_internal.h"

#include <stdlib.h>
#include <string.h>

/* Find up to @max objects of @cls; with @use_uri only those that carry the
 * address's label and id. */
estc_err estc__p11_find_objects(struct p11_op *op, CK_OBJECT_CLASS cls, bool use_uri,
                                CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n)
{
    CK_ATTRIBUTE tmpl[3];
    CK_ULONG nt = 0;
    tmpl[nt++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    if (use_uri && op->uri.label != NULL) {
        tmpl[nt++] = *op->uri.label;
    }
    if (use_uri && op->uri.id != NULL) {
        tmpl[nt++] = *op->uri.id;
    }
    *n = 0;
    CK_RV rv = op->fn->C_FindObjectsInit(op->s, tmpl, nt);
    if (rv != CKR_OK) {
        return estc__p11_fail(op, "C_FindObjectsInit", rv);
    }
    rv = op->fn->C_FindObjects(op->s, out, max, n);
    CK_RV rv2 = op->fn->C_FindObjectsFinal(op->s);
    if (rv != CKR_OK) {
        return estc__p11_fail(op, "C_FindObjects", rv);
    }
    if (rv2 != CKR_OK) {
        return estc__p11_fail(op, "C_FindObjectsFinal", rv2);
    }
    return ESTC_OK;
}

/* Read attribute @type of @h into a new buffer. */
estc_err estc__p11_get_attr(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                            estc_buf *out)
{
    CK_ATTRIBUTE a = {type, NULL, 0};
    CK_RV rv = op->fn->C_GetAttributeValue(op->s, h, &a, 1);
    if (rv != CKR_OK) {
        return estc__p11_fail(op, "C_GetAttributeValue", rv);
    }
    if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
        return estc__p11_fail(op, "C_GetAttributeValue", CKR_ATTRIBUTE_TYPE_INVALID);
    }
    uint8_t *p = malloc(a.ulValueLen > 0 ? a.ulValueLen : 1);
    if (p == NULL) {
        return estc__p11_nomem(op);
    }
    a.pValue = p;
    rv = op->fn->C_GetAttributeValue(op->s, h, &a, 1);
    if (rv != CKR_OK) {
        free(p);
        return estc__p11_fail(op, "C_GetAttributeValue", rv);
    }
    out->data = p;
    out->len = a.ulValueLen;
    return ESTC_OK;
}

bool estc__p11_get_ulong(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, CK_ULONG *v)
{
    CK_ATTRIBUTE a = {type, v, sizeof(*v)};
    return op->fn->C_GetAttributeValue(op->s, h, &a, 1) == CKR_OK && a.ulValueLen == sizeof(*v);
}

bool estc__p11_get_bool(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, bool *v)
{
    CK_BBOOL b = CK_FALSE;
    CK_ATTRIBUTE a = {type, &b, sizeof(b)};
    if (op->fn->C_GetAttributeValue(op->s, h, &a, 1) != CKR_OK || a.ulValueLen != sizeof(b)) {
        return false;
    }
    *v = (b == CK_TRUE);
    return true;
}

/* A certificate is a trust-store one when the token marks it trusted or it
 * was stored as an authority certificate. */
bool estc__p11_cert_is_trust(struct p11_op *op, CK_OBJECT_HANDLE h)
{
    bool trusted = false;
    CK_ULONG category = 0;
    if (estc__p11_get_bool(op, h, CKA_TRUSTED, &trusted) && trusted) {
        return true;
    }
    return estc__p11_get_ulong(op, h, CKA_CERTIFICATE_CATEGORY, &category) &&
           category == CERT_CATEGORY_AUTHORITY;
}

/* ------------------------------------------------------------------------ */
/* The handle cache                                                          */
/* ------------------------------------------------------------------------ */

static bool hc_same(const struct hcache_entry *e, CK_OBJECT_CLASS cls, const CK_ATTRIBUTE *label,
                    const CK_ATTRIBUTE *id)
{
    return e->used && e->cls == cls && e->has_label == (label != NULL) &&
           e->has_id == (id != NULL) &&
           (label == NULL || (e->label_len == label->ulValueLen &&
                              memcmp(e->label, label->pValue, e->label_len) == 0)) &&
           (id == NULL ||
            (e->id_len == id->ulValueLen && memcmp(e->id, id->pValue, e->id_len) == 0));
}

/* A cached handle is used only when the object behind it still has the
 * class, label and id the address asks for: whatever the token did with
 * handles meanwhile, it is then the object the address names. */
bool estc__p11_handle_is(struct p11_op *op, CK_OBJECT_HANDLE h, CK_OBJECT_CLASS cls,
                         const CK_ATTRIBUTE *label, const CK_ATTRIBUTE *id)
{
    /* Buffers one byte longer than the values asked for: a longer value
     * shows as a different length or CKR_BUFFER_TOO_SMALL, both "no". */
    CK_OBJECT_CLASS c = (CK_OBJECT_CLASS)-1;
    uint8_t lsmall[HCACHE_LABEL_MAX + 1], ismall[HCACHE_ID_MAX + 1];
    uint8_t *lb = lsmall, *ib = ismall;
    CK_ULONG llen = label != NULL ? label->ulValueLen + 1 : 0;
    CK_ULONG ilen = id != NULL ? id->ulValueLen + 1 : 0;
    if (llen > sizeof(lsmall)) {
        lb = malloc(llen);
    }
    if (ilen > sizeof(ismall)) {
        ib = malloc(ilen);
    }
    bool same = false;
    if (lb != NULL && ib != NULL) {
        CK_ATTRIBUTE t[3];
        CK_ULONG n = 0;
        t[n++] = (CK_ATTRIBUTE){CKA_CLASS, &c, sizeof(c)};
        if (label != NULL) {
            t[n++] = (CK_ATTRIBUTE){CKA_LABEL, lb, llen};
        }
        if (id != NULL) {
            t[n++] = (CK_ATTRIBUTE){CKA_ID, ib, ilen};
        }
        same = op->fn->C_GetAttributeValue(op->s, h, t, n) == CKR_OK && c == cls;
        for (CK_ULONG i = 1; same && i < n; i++) {
            const CK_ATTRIBUTE *want = t[i].type == CKA_LABEL ? label : id;
            same = t[i].ulValueLen == want->ulValueLen &&
                   memcmp(t[i].pValue, want->pValue, want->ulValueLen) == 0;
        }
    }
    /* Out of memory: not known to be the object, so not used. */
    if (lb != lsmall) {
        free(lb);
    }
    if (ib != ismall) {
        free(ib);
    }
    return same;
}

/* A module that answers a search with a handle that names another object
 * (see estc__p11_reinit()) is initialized again, once per operation. */
estc_err estc__p11_find_checked(struct p11_op *op, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *out,
                                CK_ULONG max, CK_ULONG *n)
{
    for (int round = 0;; round++) {
        estc_err err = estc__p11_find_objects(op, cls, true, out, max, n);
        bool ok = true;
        for (CK_ULONG i = 0; err == ESTC_OK && ok && i < *n; i++) {
            ok = estc__p11_handle_is(op, out[i], cls, op->uri.label, op->uri.id);
        }
        if (err != ESTC_OK || ok) {
            return err;
        }
        if (round > 0) {
            *n = 0;
            return estc_error(op->ctx, ESTC_ERR_ENGINE,
                              "%s: the token gives one object handle to two objects", op->shown);
        }
        err = estc__p11_reinit(op);
        if (err != ESTC_OK) {
            return err;
        }
    }
}

/* The handle @h a creation of an object of @cls returned must name the
 * new object (the only one of @cls with the address's label and id); when
 * it names another, the module is initialized again and the new object
 * found by its label and id. */
estc_err estc__p11_created(struct p11_op *op, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *h)
{
    if (estc__p11_handle_is(op, *h, cls, op->uri.label, op->uri.id)) {
        return ESTC_OK;
    }
    CK_OBJECT_HANDLE hs[2];
    CK_ULONG n = 0;
    estc_err err = estc__p11_reinit(op);
    if (err == ESTC_OK) {
        err = estc__p11_find_checked(op, cls, hs, 2, &n);
    }
    if (err == ESTC_OK && n != 1) {
        return estc_error(op->ctx, ESTC_ERR_ENGINE,
                          "%s: the token answered the creation with the handle of another object",
                          op->shown);
    }
    if (err == ESTC_OK) {
        *h = hs[0];
    }
    return err;
}

static struct hcache_entry *hc_store(struct p11_op *op, CK_OBJECT_CLASS cls,
                                     const CK_ATTRIBUTE *label, const CK_ATTRIBUTE *id,
                                     CK_OBJECT_HANDLE h)
{
    if ((label != NULL && label->ulValueLen > HCACHE_LABEL_MAX) ||
        (id != NULL && id->ulValueLen > HCACHE_ID_MAX)) {
        return NULL;
    }
    struct p11_token *t = op->tok;
    /* One entry per object: a new one replaces the old. */
    for (unsigned i = 0; i < HCACHE_SIZE; i++) {
        if (hc_same(&t->hc[i], cls, label, id)) {
            t->hc[i].used = false;
        }
    }
    struct hcache_entry *e = &t->hc[t->hc_next++ % HCACHE_SIZE];
    memset(e, 0, sizeof(*e));
    e->used = true;
    e->cls = cls;
    e->h = h;
    if (label != NULL) {
        e->has_label = true;
        e->label_len = label->ulValueLen;
        memcpy(e->label, label->pValue, e->label_len);
    }
    if (id != NULL) {
        e->has_id = true;
        e->id_len = id->ulValueLen;
        memcpy(e->id, id->pValue, e->id_len);
    }
    return e;
}

static struct hcache_entry *hc_lookup(struct p11_op *op, CK_OBJECT_CLASS cls)
{
    for (unsigned i = 0; i < HCACHE_SIZE; i++) {
        struct hcache_entry *e = &op->tok->hc[i];
        if (hc_same(e, cls, op->uri.label, op->uri.id)) {
            return e;
        }
    }
    return NULL;
}

void estc__p11_forget(struct p11_op *op, CK_OBJECT_HANDLE h)
{
    if (op->tok == NULL) {
        return;
    }
    for (unsigned i = 0; i < HCACHE_SIZE; i++) {
        if (op->tok->hc[i].used && op->tok->hc[i].h == h) {
            op->tok->hc[i].used = false;
        }
    }
}

void estc__p11_remember_key(struct p11_op *op, CK_OBJECT_HANDLE h, CK_KEY_TYPE kt)
{
    struct hcache_entry *e = hc_store(op, CKO_PRIVATE_KEY, op->uri.label, op->uri.id, h);
    if (e != NULL) {
        e->has_kt = true;
        e->kt = kt;
    }
}

/* The hot path of signing: a cached private key is used as it is, without
 * reading its attributes again (each read is a file access on SoftHSM and a
 * round trip on a real token). The token's answer to C_SignInit tells when
 * the handle went stale (removed or replaced by another process), and
 * estc's own removals drop the entry. */
estc_err estc__p11_find_key(struct p11_op *op, bool use_cache, CK_OBJECT_HANDLE *h, CK_KEY_TYPE *kt,
                            bool *found, bool *cached)
{
    *cached = false;
    struct hcache_entry *e = use_cache ? hc_lookup(op, CKO_PRIVATE_KEY) : NULL;
    if (e != NULL && e->has_kt) {
        *h = e->h;
        *kt = e->kt;
        *found = true;
        *cached = true;
        return ESTC_OK;
    }
    if (!use_cache) {
        /* Search the token, whatever the cache says. */
        e = hc_lookup(op, CKO_PRIVATE_KEY);
        if (e != NULL) {
            e->used = false;
        }
    }
    estc_err err = estc__p11_find_one(op, CKO_PRIVATE_KEY, h, found);
    if (err != ESTC_OK || !*found) {
        return err;
    }
    CK_ULONG v = 0;
    if (!estc__p11_get_ulong(op, *h, CKA_KEY_TYPE, &v)) {
        return estc__p11_fail(op, "C_GetAttributeValue", CKR_ATTRIBUTE_TYPE_INVALID);
    }
    *kt = v;
    e = hc_lookup(op, CKO_PRIVATE_KEY);
    if (e != NULL && e->h == *h) {
        e->has_kt = true;
        e->kt = v;
    }
    return ESTC_OK;
}

/* The one object of @cls the address names; *@found false when none. */
estc_err estc__p11_find_one(struct p11_op *op, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *h,
                            bool *found)
{
    const CK_ATTRIBUTE *label = op->uri.label, *id = op->uri.id;
    for (unsigned i = 0; i < HCACHE_SIZE; i++) {
        struct hcache_entry *e = &op->tok->hc[i];
        if (hc_same(e, cls, label, id)) {
            if (estc__p11_handle_is(op, e->h, cls, label, id)) {
                *h = e->h;
                *found = true;
                return ESTC_OK;
            }
            e->used = false;
        }
    }
    CK_OBJECT_HANDLE hs[2];
    CK_ULONG n = 0;
    estc_err err = estc__p11_find_checked(op, cls, hs, 2, &n);
    if (err != ESTC_OK) {
        return err;
    }
    *found = n > 0;
    if (n > 0) {
        *h = hs[0];
        hc_store(op, cls, label, id, hs[0]);
    }
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Removal                                                                   */
/* ------------------------------------------------------------------------ */

estc_err estc__p11_not_found(struct p11_op *op, const char *what)
{
    return estc_error(op->ctx, ESTC_ERR_NOT_FOUND, "%s: no %s at this address", op->shown, what);
}

void estc__p11_destroy_quiet(struct p11_op *op, CK_OBJECT_HANDLE h)
{
    estc__p11_forget(op, h);
    (void)op->fn->C_DestroyObject(op->s, h);
}

/* Remove every object of @cls the address names; *@n counts them. */
estc_err estc__p11_destroy_all(struct p11_op *op, CK_OBJECT_CLASS cls, CK_ULONG *n)
{
    CK_OBJECT_HANDLE hs[16];
    CK_ULONG found = 0;
    *n = 0;
    /* Checked handles only: a handle that names another object would
     * destroy that one. */
    estc_err err = estc__p11_find_checked(op, cls, hs, 16, &found);
    for (CK_ULONG i = 0; err == ESTC_OK && i < found; i++) {
        estc__p11_forget(op, hs[i]);
        CK_RV rv = op->fn->C_DestroyObject(op->s, hs[i]);
        if (rv != CKR_OK) {
            return estc__p11_fail(op, "C_DestroyObject", rv);
        }
        (*n)++;
    }
    return err;
}
