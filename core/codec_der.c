/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DER reader and the ASN.1 codecs: certs-only PKCS#7 (CF 281), one X.509
 * certificate (CF 287) and CSR attributes (CF 285).
 *
 * The structure is walked by hand so that every length is checked against
 * its parent and BER-only encodings are refused; OpenSSL is only asked to
 * confirm that each certificate parses.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "codec.h"

/* ------------------------------------------------------------------------ */
/* DER reader                                                                */
/* ------------------------------------------------------------------------ */

estc_err estc__der_next(estc__der *cur, estc__der_tlv *tlv)
{
    if (cur == NULL || tlv == NULL || (cur->p == NULL && cur->len != 0))
        return ESTC_ERR_INVALID_ARG;
    if (cur->len < 2)
        return ESTC_ERR_FORMAT;
    const uint8_t *p = cur->p;
    size_t avail = cur->len;
    uint8_t tag = p[0];
    /* High tag numbers never occur in what EST servers send. */
    if ((tag & 0x1f) == 0x1f)
        return ESTC_ERR_FORMAT;
    size_t pos = 1;
    size_t clen;
    uint8_t l0 = p[pos++];
    if (l0 < 0x80) {
        clen = l0;
    } else {
        size_t n = l0 & 0x7f;
        /* 0x80 is BER's indefinite length; more than 4 octets is absurd here. */
        if (n == 0 || n > 4 || avail - pos < n)
            return ESTC_ERR_FORMAT;
        if (p[pos] == 0)
            return ESTC_ERR_FORMAT; /* leading zero: not minimal */
        clen = 0;
        for (size_t i = 0; i < n; i++)
            clen = (clen << 8) | p[pos++];
        if (clen < 0x80)
            return ESTC_ERR_FORMAT; /* long form for a short length */
    }
    if (clen > avail - pos)
        return ESTC_ERR_FORMAT;
    tlv->tag = tag;
    tlv->tlv = p;
    tlv->tlv_len = pos + clen;
    tlv->contents.p = p + pos;
    tlv->contents.len = clen;
    cur->p += tlv->tlv_len;
    cur->len -= tlv->tlv_len;
    return ESTC_OK;
}

estc_err estc__der_expect(estc__der *cur, uint8_t tag, estc__der_tlv *tlv)
{
    if (cur == NULL || tlv == NULL || cur->len == 0)
        return cur == NULL || tlv == NULL ? ESTC_ERR_INVALID_ARG : ESTC_ERR_FORMAT;
    if (cur->p[0] != tag)
        return ESTC_ERR_FORMAT;
    return estc__der_next(cur, tlv);
}

static estc_err check_tree(const estc__der *contents, int depth)
{
    if (depth > ESTC__MAX_DER_DEPTH)
        return ESTC_ERR_FORMAT;
    estc__der cur = *contents;
    while (cur.len > 0) {
        estc__der_tlv t;
        estc_err err = estc__der_next(&cur, &t);
        if (err != ESTC_OK)
            return err;
        if (t.tag & 0x20) {
            err = check_tree(&t.contents, depth + 1);
            if (err != ESTC_OK)
                return err;
        }
    }
    return ESTC_OK;
}

estc_err estc__der_check_tree(const estc__der_tlv *tlv)
{
    if (tlv == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (!(tlv->tag & 0x20))
        return ESTC_OK;
    return check_tree(&tlv->contents, 1);
}

estc_err estc__der_oid_text(const estc__der *contents, char text[ESTC__OID_TEXT_MAX])
{
    if (contents == NULL || text == NULL || (contents->p == NULL && contents->len != 0))
        return ESTC_ERR_INVALID_ARG;
    text[0] = '\0';
    if (contents->len == 0 || contents->len > 64)
        return ESTC_ERR_FORMAT;
    size_t out = 0;
    uint64_t arc = 0;
    bool first = true;
    bool start = true; /* at the first octet of an arc */
    for (size_t i = 0; i < contents->len; i++) {
        uint8_t b = contents->p[i];
        if (start && b == 0x80)
            return ESTC_ERR_FORMAT; /* non-minimal arc */
        if (arc > (UINT64_MAX >> 7))
            return ESTC_ERR_FORMAT;
        arc = (arc << 7) | (b & 0x7f);
        start = false;
        if (b & 0x80)
            continue;
        char piece[48];
        int n;
        if (first) {
            uint64_t a = arc < 40 ? 0 : arc < 80 ? 1 : 2;
            n = snprintf(piece, sizeof(piece), "%llu.%llu", (unsigned long long)a,
                         (unsigned long long)(arc - a * 40));
            first = false;
        } else {
            n = snprintf(piece, sizeof(piece), ".%llu", (unsigned long long)arc);
        }
        if (n < 0 || (size_t)n >= ESTC__OID_TEXT_MAX - out)
            return ESTC_ERR_FORMAT;
        memcpy(text + out, piece, (size_t)n + 1);
        out += (size_t)n;
        arc = 0;
        start = true;
    }
    if (!start) {
        text[0] = '\0';
        return ESTC_ERR_FORMAT; /* last arc unfinished */
    }
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Lists                                                                     */
/* ------------------------------------------------------------------------ */

void estc__der_list_free(estc__der_list *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->n; i++)
        estc_buf_free(&list->items[i]);
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

static estc_err list_add(estc__der_list *list, const uint8_t *der, size_t len, size_t cap)
{
    if (list->n >= cap)
        return ESTC_ERR_LIMIT;
    estc_buf *items = realloc(list->items, (list->n + 1) * sizeof(*items));
    if (items == NULL)
        return ESTC_ERR_NOMEM;
    list->items = items;
    items[list->n].data = NULL;
    items[list->n].len = 0;
    estc_err err = estc_buf_set(&items[list->n], der, len);
    if (err != ESTC_OK)
        return err;
    list->n++;
    return ESTC_OK;
}

estc_err estc__der_list_add(estc__der_list *list, const uint8_t *der, size_t len)
{
    return list_add(list, der, len, SIZE_MAX);
}

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */
/* ------------------------------------------------------------------------ */

/* 1.2.840.113549.1.7.2 signedData and 1.2.840.113549.1.7.1 data. */
static const uint8_t oid_signed_data[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02};
static const uint8_t oid_data[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01};

static bool oid_is(const estc__der_tlv *t, const uint8_t *oid, size_t len)
{
    return t->contents.len == len && memcmp(t->contents.p, oid, len) == 0;
}

/* Who is handed each certificate parsed (estc__codec_certs_keep()). */
struct keeper {
    estc__cert_keep_fn fn;
    void *arg;
};

/* A certificate element: a SEQUENCE that is DER all the way down and X.509. */
static estc_err check_cert(const estc__der_tlv *t, X509 **parsed)
{
    if (t->tag != ESTC__DER_SEQUENCE)
        return ESTC_ERR_FORMAT;
    estc_err err = estc__der_check_tree(t);
    if (err != ESTC_OK)
        return err;
    const unsigned char *p = t->tlv;
    X509 *x = d2i_X509(NULL, &p, (long)t->tlv_len);
    if (x == NULL)
        return ESTC_ERR_FORMAT;
    if ((size_t)(p - t->tlv) != t->tlv_len) {
        X509_free(x);
        return ESTC_ERR_FORMAT;
    }
    *parsed = x;
    return ESTC_OK;
}

/* Appends the certificate @t to @out and hands its parse @x (freed here) to
 * @k, if any. */
static estc_err add_cert(estc__der_list *out, const estc__der_tlv *t, X509 *x, size_t cap,
                         const struct keeper *k)
{
    estc_err err = list_add(out, t->tlv, t->tlv_len, cap);
    if (err == ESTC_OK && k != NULL && k->fn != NULL)
        k->fn(k->arg, &out->items[out->n - 1], x);
    X509_free(x);
    return err;
}

/* A small non-negative INTEGER in DER (for the CMS version). */
static estc_err small_int(const estc__der_tlv *t, long *value)
{
    if (t->tag != ESTC__DER_INTEGER || t->contents.len == 0 || t->contents.len > 2)
        return ESTC_ERR_FORMAT;
    const uint8_t *c = t->contents.p;
    if (c[0] & 0x80)
        return ESTC_ERR_FORMAT; /* negative */
    if (t->contents.len == 2 && c[0] == 0 && !(c[1] & 0x80))
        return ESTC_ERR_FORMAT; /* not minimal */
    *value = t->contents.len == 1 ? c[0] : (c[0] << 8) | c[1];
    return ESTC_OK;
}

static estc_err parse_certs_only(const uint8_t *in, size_t len, estc__der_list *out,
                                 const struct keeper *k)
{
    estc__der top = {in, len};
    estc__der_tlv ci, t;
    estc_err err;

    /* ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content } */
    if ((err = estc__der_expect(&top, ESTC__DER_SEQUENCE, &ci)) != ESTC_OK)
        return err;
    if (top.len != 0)
        return ESTC_ERR_FORMAT;
    estc__der cur = ci.contents;
    if ((err = estc__der_expect(&cur, ESTC__DER_OID, &t)) != ESTC_OK)
        return err;
    if (!oid_is(&t, oid_signed_data, sizeof(oid_signed_data)))
        return ESTC_ERR_FORMAT;
    estc__der_tlv explicit0, sd;
    if ((err = estc__der_expect(&cur, ESTC__DER_CTX_CONS(0), &explicit0)) != ESTC_OK)
        return err;
    if (cur.len != 0)
        return ESTC_ERR_FORMAT;
    estc__der inner = explicit0.contents;
    if ((err = estc__der_expect(&inner, ESTC__DER_SEQUENCE, &sd)) != ESTC_OK)
        return err;
    if (inner.len != 0)
        return ESTC_ERR_FORMAT;

    /* SignedData ::= SEQUENCE { version, digestAlgorithms SET, encapContentInfo,
     *   certificates [0] IMPLICIT OPTIONAL, crls [1] IMPLICIT OPTIONAL, signerInfos SET } */
    cur = sd.contents;
    long version;
    if ((err = estc__der_next(&cur, &t)) != ESTC_OK)
        return err;
    if ((err = small_int(&t, &version)) != ESTC_OK)
        return err;
    if (version < 1 || version > 5)
        return ESTC_ERR_FORMAT;
    if ((err = estc__der_expect(&cur, ESTC__DER_SET, &t)) != ESTC_OK)
        return err;
    if (t.contents.len != 0)
        return ESTC_ERR_FORMAT; /* digest algorithms: only a signed message has them */
    estc__der_tlv eci;
    if ((err = estc__der_expect(&cur, ESTC__DER_SEQUENCE, &eci)) != ESTC_OK)
        return err;
    estc__der ecur = eci.contents;
    if ((err = estc__der_expect(&ecur, ESTC__DER_OID, &t)) != ESTC_OK)
        return err;
    if (!oid_is(&t, oid_data, sizeof(oid_data)))
        return ESTC_ERR_FORMAT; /* other content type */
    /* No content, or (as OpenSSL's PKCS7 writer emits it) an empty one:
     * [0] EXPLICIT OCTET STRING of length zero. Real content is refused. */
    if (ecur.len != 0) {
        estc__der_tlv ex, os;
        if ((err = estc__der_expect(&ecur, ESTC__DER_CTX_CONS(0), &ex)) != ESTC_OK)
            return err;
        if (ecur.len != 0 ||
            (err = estc__der_expect(&ex.contents, ESTC__DER_OCTET_STRING, &os)) != ESTC_OK)
            return ESTC_ERR_FORMAT;
        if (os.contents.len != 0 || ex.contents.len != 0)
            return ESTC_ERR_FORMAT; /* content present */
    }

    if (cur.len == 0 || cur.p[0] != ESTC__DER_CTX_CONS(0))
        return ESTC_ERR_FORMAT; /* a bag without certificates is of no use */
    estc__der_tlv certs;
    if ((err = estc__der_next(&cur, &certs)) != ESTC_OK)
        return err;
    if (cur.len > 0 && cur.p[0] == ESTC__DER_CTX_CONS(1)) {
        estc__der_tlv crls;
        if ((err = estc__der_next(&cur, &crls)) != ESTC_OK)
            return err;
        if ((err = estc__der_check_tree(&crls)) != ESTC_OK)
            return err;
    }
    if ((err = estc__der_expect(&cur, ESTC__DER_SET, &t)) != ESTC_OK)
        return err;
    if (t.contents.len != 0 || cur.len != 0)
        return ESTC_ERR_FORMAT; /* signers, or trailing elements */

    estc__der cc = certs.contents;
    if (cc.len == 0)
        return ESTC_ERR_FORMAT;
    while (cc.len > 0) {
        estc__der_tlv cert;
        if ((err = estc__der_next(&cc, &cert)) != ESTC_OK)
            return err;
        /* CertificateChoices: only plain certificates, not the [0]..[3] forms. */
        X509 *x = NULL;
        if ((err = check_cert(&cert, &x)) != ESTC_OK)
            return err;
        if ((err = add_cert(out, &cert, x, ESTC__MAX_CERTS, k)) != ESTC_OK)
            return err;
    }
    return ESTC_OK;
}

static estc_err start_list(const uint8_t *in, size_t len, estc__der_list *out)
{
    if (out == NULL || (in == NULL && len != 0))
        return ESTC_ERR_INVALID_ARG;
    out->items = NULL;
    out->n = 0;
    if (len > ESTC__MAX_CERTS_SIZE)
        return ESTC_ERR_LIMIT;
    return ESTC_OK;
}

static estc_err certs_only(const uint8_t *in, size_t len, estc__der_list *out,
                           const struct keeper *k)
{
    estc_err err = start_list(in, len, out);
    if (err != ESTC_OK)
        return err;
    err = parse_certs_only(in, len, out, k);
    if (err != ESTC_OK)
        estc__der_list_free(out);
    return err;
}

static estc_err pkix_cert(const uint8_t *in, size_t len, estc__der_list *out,
                          const struct keeper *k)
{
    estc_err err = start_list(in, len, out);
    if (err != ESTC_OK)
        return err;
    estc__der cur = {in, len};
    estc__der_tlv t;
    X509 *x = NULL;
    err = estc__der_next(&cur, &t);
    if (err == ESTC_OK && cur.len != 0)
        err = ESTC_ERR_FORMAT;
    if (err == ESTC_OK)
        err = check_cert(&t, &x);
    if (err == ESTC_OK)
        err = add_cert(out, &t, x, 1, k);
    if (err != ESTC_OK)
        estc__der_list_free(out);
    return err;
}

estc_err estc__codec_certs_only(const uint8_t *in, size_t len, estc__der_list *out)
{
    return certs_only(in, len, out, NULL);
}

estc_err estc__codec_pkix_cert(const uint8_t *in, size_t len, estc__der_list *out)
{
    return pkix_cert(in, len, out, NULL);
}

estc_err estc__codec_certs_keep(int cf, const uint8_t *in, size_t len, estc__der_list *out,
                                estc__cert_keep_fn keep, void *arg)
{
    const struct keeper k = {keep, arg};
    if (cf == ESTC__CF_PKCS7_CERTS)
        return certs_only(in, len, out, &k);
    if (cf == ESTC__CF_PKIX_CERT)
        return pkix_cert(in, len, out, &k);
    estc_err err = start_list(in, len, out);
    return err != ESTC_OK ? err : ESTC_ERR_PROTOCOL;
}

estc_err estc__codec_certs(int cf, const uint8_t *in, size_t len, estc__der_list *out)
{
    return estc__codec_certs_keep(cf, in, len, out, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* CSR attributes                                                            */
/* ------------------------------------------------------------------------ */

static void csrattr_clear(estc__csrattr *a)
{
    estc_buf_free(&a->oid_der);
    estc__der_list_free(&a->values);
}

void estc__csrattrs_free(estc__csrattrs *attrs)
{
    if (attrs == NULL)
        return;
    for (size_t i = 0; i < attrs->n; i++)
        csrattr_clear(&attrs->items[i]);
    free(attrs->items);
    attrs->items = NULL;
    attrs->n = 0;
}

static estc_err parse_csrattr(const estc__der_tlv *item, estc__csrattr *a)
{
    estc_err err;
    estc__der_tlv oid;
    if (item->tag == ESTC__DER_OID) {
        a->kind = ESTC__CSRATTR_OID;
        oid = *item;
    } else if (item->tag == ESTC__DER_SEQUENCE) {
        a->kind = ESTC__CSRATTR_ATTRIBUTE;
        estc__der cur = item->contents;
        if ((err = estc__der_expect(&cur, ESTC__DER_OID, &oid)) != ESTC_OK)
            return err;
        estc__der_tlv set;
        if ((err = estc__der_expect(&cur, ESTC__DER_SET, &set)) != ESTC_OK)
            return err;
        if (cur.len != 0 || set.contents.len == 0)
            return ESTC_ERR_FORMAT;
        estc__der vals = set.contents;
        while (vals.len > 0) {
            estc__der_tlv v;
            if ((err = estc__der_next(&vals, &v)) != ESTC_OK)
                return err;
            if ((err = estc__der_check_tree(&v)) != ESTC_OK)
                return err;
            err = list_add(&a->values, v.tlv, v.tlv_len, ESTC__MAX_CSRATTR_VALUES);
            if (err != ESTC_OK)
                return err;
        }
    } else {
        return ESTC_ERR_FORMAT;
    }
    if ((err = estc__der_oid_text(&oid.contents, a->oid)) != ESTC_OK)
        return err;
    return estc_buf_set(&a->oid_der, oid.tlv, oid.tlv_len);
}

static estc_err parse_csrattrs(const uint8_t *in, size_t len, estc__csrattrs *out)
{
    if (len == 0)
        return ESTC_OK;
    estc__der top = {in, len};
    estc__der_tlv seq;
    estc_err err = estc__der_expect(&top, ESTC__DER_SEQUENCE, &seq);
    if (err != ESTC_OK)
        return err;
    if (top.len != 0)
        return ESTC_ERR_FORMAT;
    estc__der cur = seq.contents;
    while (cur.len > 0) {
        estc__der_tlv item;
        if ((err = estc__der_next(&cur, &item)) != ESTC_OK)
            return err;
        if (out->n >= ESTC__MAX_CSRATTRS)
            return ESTC_ERR_LIMIT;
        estc__csrattr *items = realloc(out->items, (out->n + 1) * sizeof(*items));
        if (items == NULL)
            return ESTC_ERR_NOMEM;
        out->items = items;
        memset(&items[out->n], 0, sizeof(items[out->n]));
        /* Count it first so that a failure below frees what it holds. */
        out->n++;
        if ((err = parse_csrattr(&item, &items[out->n - 1])) != ESTC_OK)
            return err;
    }
    return ESTC_OK;
}

estc_err estc__codec_csrattrs(const uint8_t *in, size_t len, estc__csrattrs *out)
{
    if (out == NULL || (in == NULL && len != 0))
        return ESTC_ERR_INVALID_ARG;
    out->items = NULL;
    out->n = 0;
    if (len > ESTC__MAX_CSRATTRS_SIZE)
        return ESTC_ERR_LIMIT;
    estc_err err = parse_csrattrs(in, len, out);
    if (err != ESTC_OK)
        estc__csrattrs_free(out);
    return err;
}

const estc__csrattr *estc__csrattrs_find(const estc__csrattrs *attrs, const char *oid)
{
    if (attrs == NULL || oid == NULL)
        return NULL;
    for (size_t i = 0; i < attrs->n; i++)
        if (strcmp(attrs->items[i].oid, oid) == 0)
            return &attrs->items[i];
    return NULL;
}

void estc__csr_hints_free(estc__csr_hints *hints)
{
    if (hints == NULL)
        return;
    estc_buf_free(&hints->extension_request);
    memset(hints, 0, sizeof(*hints));
}

static const struct {
    const char *oid;
    estc_hash hash;
} hash_oids[] = {
    {"2.16.840.1.101.3.4.2.1", ESTC_HASH_SHA256}, /* sha256 */
    {"2.16.840.1.101.3.4.2.2", ESTC_HASH_SHA384}, /* sha384 */
    {"2.16.840.1.101.3.4.2.3", ESTC_HASH_SHA512}, /* sha512 */
    {"1.2.840.10045.4.3.2", ESTC_HASH_SHA256},    /* ecdsa-with-SHA256 */
    {"1.2.840.10045.4.3.3", ESTC_HASH_SHA384},    /* ecdsa-with-SHA384 */
    {"1.2.840.10045.4.3.4", ESTC_HASH_SHA512},    /* ecdsa-with-SHA512 */
    {"1.2.840.113549.1.1.11", ESTC_HASH_SHA256},  /* sha256WithRSAEncryption */
    {"1.2.840.113549.1.1.12", ESTC_HASH_SHA384},  /* sha384WithRSAEncryption */
    {"1.2.840.113549.1.1.13", ESTC_HASH_SHA512},  /* sha512WithRSAEncryption */
};

#define OID_EC_PUBLIC_KEY "1.2.840.10045.2.1"
#define OID_P256 "1.2.840.10045.3.1.7"
#define OID_P384 "1.3.132.0.34"
#define OID_CHALLENGE_PASSWORD "1.2.840.113549.1.9.7"
#define OID_EXTENSION_REQUEST "1.2.840.113549.1.9.14"

/* The curve named by an OID element, as a key type (0 if not one we make). */
static estc_key_type curve_of(const estc__der *oid_contents)
{
    char text[ESTC__OID_TEXT_MAX];
    if (estc__der_oid_text(oid_contents, text) != ESTC_OK)
        return 0;
    if (strcmp(text, OID_P256) == 0)
        return ESTC_KEY_EC_P256;
    if (strcmp(text, OID_P384) == 0)
        return ESTC_KEY_EC_P384;
    return 0;
}

estc_err estc__csrattrs_hints(const estc__csrattrs *attrs, estc__csr_hints *hints)
{
    if (attrs == NULL || hints == NULL || (attrs->items == NULL && attrs->n != 0))
        return ESTC_ERR_INVALID_ARG;
    memset(hints, 0, sizeof(*hints));
    for (size_t i = 0; i < attrs->n; i++) {
        const estc__csrattr *a = &attrs->items[i];
        if (a->kind == ESTC__CSRATTR_OID) {
            for (size_t h = 0; h < sizeof(hash_oids) / sizeof(hash_oids[0]); h++)
                if (hints->hash == 0 && strcmp(a->oid, hash_oids[h].oid) == 0)
                    hints->hash = hash_oids[h].hash;
            if (strcmp(a->oid, OID_CHALLENGE_PASSWORD) == 0)
                hints->challenge_password = true;
            if (hints->key_type == 0 && strcmp(a->oid, OID_P256) == 0)
                hints->key_type = ESTC_KEY_EC_P256;
            if (hints->key_type == 0 && strcmp(a->oid, OID_P384) == 0)
                hints->key_type = ESTC_KEY_EC_P384;
            continue;
        }
        /* RFC 7030 §4.5.2: { id-ecPublicKey, SET { namedCurve OID } }. */
        if (strcmp(a->oid, OID_EC_PUBLIC_KEY) == 0 && hints->key_type == 0) {
            for (size_t v = 0; v < a->values.n; v++) {
                estc__der cur = {a->values.items[v].data, a->values.items[v].len};
                estc__der_tlv t;
                if (estc__der_expect(&cur, ESTC__DER_OID, &t) == ESTC_OK && hints->key_type == 0)
                    hints->key_type = curve_of(&t.contents);
            }
        } else if (strcmp(a->oid, OID_EXTENSION_REQUEST) == 0 && a->values.n == 1 &&
                   hints->extension_request.len == 0) {
            estc_err err = estc_buf_set(&hints->extension_request, a->values.items[0].data,
                                        a->values.items[0].len);
            if (err != ESTC_OK) {
                estc__csr_hints_free(hints);
                return err;
            }
        } else if (strcmp(a->oid, OID_CHALLENGE_PASSWORD) == 0) {
            hints->challenge_password = true;
        }
    }
    return ESTC_OK;
}
