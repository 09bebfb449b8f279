/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PKCS#10 requests: subject and subjectAltName from the configuration (or
 * the current certificate for /sren), what /att asked for, and a signature
 * made by the key's engine (estc_key_sign()), so the key never leaves it.
 * The request is assembled around the engine's SubjectPublicKeyInfo as it
 * is: no private or public key object is built on this path (OpenSSL 3.0
 * builds a decoder for each, the largest cost of an enrollment).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "client_internal.h"

static estc_err openssl_fail(estc_client *c, estc_err err, const char *what)
{
    char reason[200] = "no OpenSSL detail";
    unsigned long e = ERR_peek_last_error();
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    return estc_error(c->ctx, err, "%s: %s", what, reason);
}

/* @err with @what and the engine's own reason, which is in the context's
 * detail: copied first, since estc_error() writes the same buffer. */
static estc_err engine_fail(estc_client *c, estc_err err, const char *what)
{
    const char *why = estc_ctx_error_detail(c->ctx);
    char *copy = why[0] != '\0' ? strdup(why) : NULL;
    err = estc_error(c->ctx, err, "%s%s%s", what, copy != NULL ? ": " : "",
                     copy != NULL ? copy : "");
    free(copy);
    return err;
}

estc_err estc__parse_subject(estc_client *c, const char *text, X509_NAME **out)
{
    if (text[0] != '/')
        return estc_error(c->ctx, ESTC_ERR_INVALID_ARG,
                          "subject \"%s\": write it as /CN=name/O=organisation", text);
    ERR_clear_error(); /* openssl_fail() reports this parse's error only */
    X509_NAME *name = X509_NAME_new();
    char *copy = strdup(text + 1);
    if (name == NULL || copy == NULL) {
        X509_NAME_free(name);
        free(copy);
        return ESTC_ERR_NOMEM;
    }
    estc_err err = ESTC_OK;
    char *save = NULL;
    for (char *rdn = strtok_r(copy, "/", &save); rdn != NULL && err == ESTC_OK;
         rdn = strtok_r(NULL, "/", &save)) {
        char *eq = strchr(rdn, '=');
        if (eq == NULL || eq == rdn || eq[1] == '\0') {
            err =
                estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "subject: \"%s\" is not type=value", rdn);
            break;
        }
        *eq = '\0';
        if (X509_NAME_add_entry_by_txt(name, rdn, MBSTRING_UTF8, (unsigned char *)eq + 1, -1, -1,
                                       0) != 1)
            err = openssl_fail(c, ESTC_ERR_INVALID_ARG, "subject attribute");
    }
    free(copy);
    if (err == ESTC_OK && X509_NAME_entry_count(name) == 0)
        err = estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "subject is empty");
    if (err != ESTC_OK) {
        X509_NAME_free(name);
        return err;
    }
    *out = name;
    return ESTC_OK;
}

estc_err estc__parse_sans(estc_client *c, GENERAL_NAMES **out)
{
    *out = NULL;
    if (c->n_sans == 0)
        return ESTC_OK;
    size_t n = 1;
    for (size_t i = 0; i < c->n_sans; i++)
        n += strlen(c->sans[i]) + 1;
    char *joined = malloc(n);
    if (joined == NULL)
        return ESTC_ERR_NOMEM;
    joined[0] = '\0';
    for (size_t i = 0; i < c->n_sans; i++) {
        if (i > 0)
            strcat(joined, ",");
        strcat(joined, c->sans[i]);
    }
    ERR_clear_error();
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, joined);
    free(joined);
    if (ext == NULL)
        return openssl_fail(c, ESTC_ERR_INVALID_ARG,
                            "subjectAltName (use DNS:, IP:, URI: or email: entries)");
    GENERAL_NAMES *gens = X509V3_EXT_d2i(ext);
    X509_EXTENSION_free(ext);
    if (gens == NULL)
        return openssl_fail(c, ESTC_ERR_INVALID_ARG, "subjectAltName");
    *out = gens;
    return ESTC_OK;
}

/* The public key of a request set from @spki's DER as it is, without
 * decoding the key: the algorithm identifier and the key bits are copied. */
/* @spki split into its algorithm identifier (*@alg, to free) and its key
 * bits (*@key, inside @spki), without decoding the key. */
static estc_err spki_split(estc_client *c, const estc_buf *spki, X509_ALGOR **alg, estc__der *key)
{
    estc__der cur = {spki->data, spki->len}, body;
    estc__der_tlv outer, algo, bits;
    if (estc__der_expect(&cur, ESTC__DER_SEQUENCE, &outer) != ESTC_OK || cur.len != 0)
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "the engine's public key is not DER");
    body = outer.contents;
    if (estc__der_expect(&body, ESTC__DER_SEQUENCE, &algo) != ESTC_OK ||
        estc__der_expect(&body, 0x03, &bits) != ESTC_OK || body.len != 0 ||
        bits.contents.len < 2 || bits.contents.p[0] != 0)
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "the engine's public key is malformed");
    const unsigned char *p = algo.tlv;
    *alg = d2i_X509_ALGOR(NULL, &p, (long)algo.tlv_len);
    if (*alg == NULL)
        return openssl_fail(c, ESTC_ERR_FORMAT, "the engine's public key");
    key->p = bits.contents.p + 1;
    key->len = bits.contents.len - 1;
    return ESTC_OK;
}

static estc_err set_spki(estc_client *c, X509_REQ *req, const estc_buf *spki)
{
    X509_ALGOR *a = NULL;
    estc__der bits;
    estc_err err = spki_split(c, spki, &a, &bits);
    if (err != ESTC_OK)
        return err;
    unsigned char *key = OPENSSL_memdup(bits.p, bits.len);
    const ASN1_OBJECT *obj = NULL;
    int ptype = V_ASN1_UNDEF;
    const void *pval = NULL;
    X509_ALGOR_get0(&obj, &ptype, &pval, a);
    ASN1_OBJECT *obj_copy = obj != NULL ? OBJ_dup(obj) : NULL;
    void *pval_copy = NULL;
    bool ok = key != NULL && obj_copy != NULL;
    if (ok && ptype == V_ASN1_OBJECT)
        ok = (pval_copy = OBJ_dup(pval)) != NULL;
    else if (ok && ptype == V_ASN1_SEQUENCE)
        ok = (pval_copy = ASN1_STRING_dup(pval)) != NULL;
    else if (ok && ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF)
        ok = false; /* no key type of the driver API has other parameters */
    if (ok &&
        X509_PUBKEY_set0_param(X509_REQ_get_X509_PUBKEY(req), obj_copy, ptype, pval_copy, key,
                               (int)bits.len) == 1) {
        X509_ALGOR_free(a);
        return ESTC_OK;
    }
    ASN1_OBJECT_free(obj_copy);
    if (ptype == V_ASN1_OBJECT)
        ASN1_OBJECT_free(pval_copy);
    else
        ASN1_STRING_free(pval_copy);
    OPENSSL_free(key);
    X509_ALGOR_free(a);
    return openssl_fail(c, ESTC_ERR_FORMAT, "the engine's public key");
}

/* How a request for the key of @spki is signed: the engine's algorithm and
 * the signature algorithm's NID for @hash (0: the one the key size asks). */
static estc_err sig_algorithm(estc_client *c, const estc_buf *spki, estc_hash hash,
                              estc_sig_alg *alg, estc_hash *used, int *sig_nid)
{
    X509_ALGOR *a = NULL;
    estc__der bits;
    estc_err err = spki_split(c, spki, &a, &bits);
    if (err != ESTC_OK)
        return err;
    const ASN1_OBJECT *obj = NULL;
    int ptype = V_ASN1_UNDEF;
    const void *pval = NULL;
    X509_ALGOR_get0(&obj, &ptype, &pval, a);
    int key_nid = OBJ_obj2nid(obj);
    int curve = key_nid == NID_X9_62_id_ecPublicKey && ptype == V_ASN1_OBJECT ? OBJ_obj2nid(pval)
                                                                               : NID_undef;
    X509_ALGOR_free(a);
    if (hash == 0)
        hash = curve == NID_secp384r1 ? ESTC_HASH_SHA384 : ESTC_HASH_SHA256;
    int md = hash == ESTC_HASH_SHA384   ? NID_sha384
             : hash == ESTC_HASH_SHA512 ? NID_sha512
                                        : NID_sha256;
    if (key_nid == NID_X9_62_id_ecPublicKey)
        *alg = ESTC_SIG_ECDSA;
    else if (key_nid == NID_rsaEncryption)
        *alg = ESTC_SIG_RSA_PKCS1;
    else
        return estc_error(c->ctx, ESTC_ERR_UNSUPPORTED,
                          "a CSR for a key of type %s cannot be signed", OBJ_nid2sn(key_nid));
    if (OBJ_find_sigid_by_algs(sig_nid, md, key_nid) != 1)
        return estc_error(c->ctx, ESTC_ERR_UNSUPPORTED, "no signature algorithm for %s with %s",
                          OBJ_nid2sn(key_nid), OBJ_nid2sn(md));
    *used = hash;
    return ESTC_OK;
}

/* Signs @req with the key at @addr, whose public key is @spki, by its
 * engine. With @verify, the signature is checked against @spki: a key
 * swapped at @addr since @spki was read is caught before anything is sent. */
static estc_err sign_req(estc_client *c, X509_REQ *req, const char *addr, const estc_buf *spki,
                         estc_hash hash, bool verify)
{
    estc_sig_alg alg = ESTC_SIG_ECDSA;
    estc_hash used = ESTC_HASH_SHA256;
    int sig_nid = NID_undef;
    estc_err err = sig_algorithm(c, spki, hash, &alg, &used, &sig_nid);
    if (err != ESTC_OK)
        return err;
    X509_ALGOR *sig_alg = X509_ALGOR_new();
    if (sig_alg == NULL ||
        X509_ALGOR_set0(sig_alg, OBJ_nid2obj(sig_nid),
                        alg == ESTC_SIG_ECDSA ? V_ASN1_UNDEF : V_ASN1_NULL, NULL) != 1 ||
        X509_REQ_set1_signature_algo(req, sig_alg) != 1) {
        X509_ALGOR_free(sig_alg);
        return openssl_fail(c, ESTC_ERR_NOMEM, "the CSR's signature algorithm");
    }
    X509_ALGOR_free(sig_alg);
    unsigned char *tbs = NULL;
    int tbs_len = i2d_re_X509_REQ_tbs(req, &tbs);
    const EVP_MD *md = used == ESTC_HASH_SHA384   ? EVP_sha384()
                       : used == ESTC_HASH_SHA512 ? EVP_sha512()
                                                  : EVP_sha256();
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (tbs_len <= 0 || EVP_Digest(tbs, (size_t)tbs_len, digest, &digest_len, md, NULL) != 1) {
        OPENSSL_free(tbs);
        return openssl_fail(c, ESTC_ERR_CRYPTO, "encoding the CSR");
    }
    OPENSSL_free(tbs);
    estc_buf sig = {0};
    err = estc_key_sign(c->ctx, addr, alg, used, digest, digest_len, &sig);
    if (err != ESTC_OK)
        return engine_fail(c, err, "signing the CSR through the engine");
    if (verify) {
        const unsigned char *p = spki->data;
        EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spki->len);
        EVP_PKEY_CTX *vctx = pub != NULL ? EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL) : NULL;
        bool good = vctx != NULL && EVP_PKEY_verify_init(vctx) == 1 &&
                    EVP_PKEY_CTX_set_signature_md(vctx, md) == 1 &&
                    (alg != ESTC_SIG_RSA_PKCS1 ||
                     EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_PKCS1_PADDING) == 1) &&
                    EVP_PKEY_verify(vctx, sig.data, sig.len, digest, digest_len) == 1;
        EVP_PKEY_CTX_free(vctx);
        EVP_PKEY_free(pub);
        ERR_clear_error();
        if (!good) {
            estc_buf_free(&sig);
            return estc_error(c->ctx, ESTC_ERR_VALIDATION,
                              "the CSR's public key is not the one of the key just made: the "
                              "key was replaced after it was written (is its folder writable "
                              "by others?); nothing sent");
        }
    }
    ASN1_BIT_STRING *bits = ASN1_BIT_STRING_new();
    if (bits == NULL || ASN1_BIT_STRING_set(bits, sig.data, (int)sig.len) != 1) {
        ASN1_BIT_STRING_free(bits);
        estc_buf_free(&sig);
        return ESTC_ERR_NOMEM;
    }
    /* A signature is a whole number of bytes: no unused bits. */
    bits->flags &= ~0x07L;
    bits->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    X509_REQ_set0_signature(req, bits);
    estc_buf_free(&sig);
    return ESTC_OK;
}

/* Adds the extensions /att asked for, except those we set ourselves. */
static estc_err add_requested(estc_client *c, STACK_OF(X509_EXTENSION) * *exts)
{
    if (c->hints.extension_request.len == 0)
        return ESTC_OK;
    const unsigned char *p = c->hints.extension_request.data;
    STACK_OF(X509_EXTENSION) *asked =
        d2i_X509_EXTENSIONS(NULL, &p, (long)c->hints.extension_request.len);
    if (asked == NULL)
        return openssl_fail(c, ESTC_ERR_FORMAT, "CSR attributes: extensionRequest");
    estc_err err = ESTC_OK;
    for (int i = 0; i < sk_X509_EXTENSION_num(asked) && err == ESTC_OK; i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(asked, i);
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(e));
        if (nid == NID_subject_alt_name && *exts != NULL &&
            X509v3_get_ext_by_NID(*exts, nid, -1) >= 0)
            continue; /* our own subjectAltName wins */
        if (X509v3_add_ext(exts, e, -1) == NULL)
            err = ESTC_ERR_NOMEM;
    }
    sk_X509_EXTENSION_pop_free(asked, X509_EXTENSION_free);
    return err;
}

/* Replaces any challengePassword of @req by @b64. */
static bool set_challenge(X509_REQ *req, const char *b64)
{
    int idx;
    while ((idx = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword, -1)) >= 0)
        X509_ATTRIBUTE_free(X509_REQ_delete_attr(req, idx));
    return X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword, MBSTRING_ASC,
                                     (const unsigned char *)b64, -1) == 1;
}

estc_err estc__csr_build(estc_client *c, const char *key_addr, const estc_buf *made,
                         const X509_NAME *subject, const GENERAL_NAMES *sans, const char *pop_b64,
                         estc_buf *der)
{
    if (c->pop && pop_b64 != NULL) {
        char *copy = strdup(key_addr);
        if (copy == NULL)
            return ESTC_ERR_NOMEM;
        free(c->pop_key);
        c->pop_key = copy;
    }
    estc_buf read = {0};
    const estc_buf *spki = made;
    estc_err err = ESTC_OK;
    if (spki == NULL) {
        err = estc_key_public(c->ctx, key_addr, &read);
        if (err != ESTC_OK)
            return engine_fail(c, err, "the key's public part");
        spki = &read;
    }
    ERR_clear_error(); /* a failure's detail is this build's */
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = NULL;
    if (req == NULL || X509_REQ_set_version(req, 0) != 1 ||
        X509_REQ_set_subject_name(req, subject) != 1) {
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "building the CSR");
        goto done;
    }
    err = set_spki(c, req, spki);
    if (err != ESTC_OK)
        goto done;
    if (sans != NULL &&
        X509V3_add1_i2d(&exts, NID_subject_alt_name, (void *)sans, 0, X509V3_ADD_DEFAULT) != 1) {
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "subjectAltName");
        goto done;
    }
    err = add_requested(c, &exts);
    if (err != ESTC_OK)
        goto done;
    if (exts != NULL && X509_REQ_add_extensions(req, exts) != 1) {
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "CSR extensions");
        goto done;
    }
    if (c->pop && pop_b64 != NULL && pop_b64[0] != '\0' && !set_challenge(req, pop_b64)) {
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "challengePassword");
        goto done;
    }
    /* The hash /att asked for; otherwise one that matches the key size. */
    err = sign_req(c, req, key_addr, spki, c->hints.hash, made != NULL);
    if (err != ESTC_OK)
        goto done;
    unsigned char *out = NULL;
    int n = i2d_X509_REQ(req, &out);
    if (n <= 0) {
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "encoding the CSR");
        goto done;
    }
    err = estc_buf_set(der, out, (size_t)n);
    OPENSSL_free(out);
done:
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    estc_buf_free(&read);
    return err;
}

estc_err estc__csr_rebind(estc_client *c, const estc_buf *der, const char *b64, estc_buf *out,
                          bool *changed)
{
    *changed = false;
    const unsigned char *p = der->data;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)der->len);
    if (req == NULL)
        return openssl_fail(c, ESTC_ERR_FORMAT, "proof-of-possession: the CSR");
    /* Already bound to this session? */
    int idx = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword, -1);
    ASN1_TYPE *t = idx >= 0 ? X509_ATTRIBUTE_get0_type(X509_REQ_get_attr(req, idx), 0) : NULL;
    if (t != NULL &&
        (t->type == V_ASN1_UTF8STRING || t->type == V_ASN1_PRINTABLESTRING ||
         t->type == V_ASN1_IA5STRING) &&
        (size_t)ASN1_STRING_length(t->value.asn1_string) == strlen(b64) &&
        memcmp(ASN1_STRING_get0_data(t->value.asn1_string), b64, strlen(b64)) == 0) {
        X509_REQ_free(req);
        return ESTC_OK;
    }
    /* Another session: sign again with the same key and hash, and check the
     * signature against the request's own public key (the key at the
     * address may have changed since). */
    int md_nid = NID_undef;
    estc_hash hash = 0;
    if (OBJ_find_sigid_algs(X509_REQ_get_signature_nid(req), &md_nid, NULL) == 1)
        hash = md_nid == NID_sha256   ? ESTC_HASH_SHA256
               : md_nid == NID_sha384 ? ESTC_HASH_SHA384
               : md_nid == NID_sha512 ? ESTC_HASH_SHA512
                                      : 0;
    unsigned char *spki_der = NULL;
    int spki_len = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &spki_der);
    estc_err err = ESTC_OK;
    if (c->pop_key == NULL)
        err = estc_error(c->ctx, ESTC_ERR_STATE, "proof-of-possession: no CSR key");
    else if (hash == 0 || spki_len <= 0)
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "proof-of-possession: the CSR's algorithms");
    if (err == ESTC_OK && !set_challenge(req, b64))
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "proof-of-possession: challengePassword");
    if (err == ESTC_OK) {
        estc_buf spki = {spki_der, (size_t)spki_len};
        err = sign_req(c, req, c->pop_key, &spki, hash, true);
        if (err != ESTC_OK)
            err = estc_error(c->ctx, err,
                             "proof-of-possession: the DTLS session changed after the CSR was "
                             "signed and its key is no longer there; try again");
    }
    unsigned char *enc = NULL;
    int n = 0;
    if (err == ESTC_OK && (n = i2d_X509_REQ(req, &enc)) <= 0)
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "proof-of-possession: signing the CSR again");
    else if (err == ESTC_OK)
        err = estc_buf_set(out, enc, (size_t)n);
    *changed = err == ESTC_OK;
    OPENSSL_free(enc);
    OPENSSL_free(spki_der);
    X509_REQ_free(req);
    return err;
}

/* The largest CSR made elsewhere that is read: far above any real one. */
#define ESTC__CSR_MAX (64 * 1024)

estc_err estc__csr_parse(estc_client *c, const void *data, size_t len, estc_buf *der,
                         estc_buf *spki)
{
    if (len == 0)
        return estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "the CSR is empty");
    if (len > ESTC__CSR_MAX)
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "%zu bytes is too big for a CSR (at most %d)",
                          len, ESTC__CSR_MAX);
    ERR_clear_error();
    /* PEM when it begins, after white space, with a PEM boundary. */
    const unsigned char *p = data;
    size_t skip = 0;
    while (skip < len && (p[skip] == ' ' || p[skip] == '\t' || p[skip] == '\r' || p[skip] == '\n'))
        skip++;
    X509_REQ *req = NULL;
    if (len - skip >= 5 && memcmp(p + skip, "-----", 5) == 0) {
        BIO *bio = BIO_new_mem_buf(data, (int)len);
        if (bio == NULL)
            return ESTC_ERR_NOMEM;
        req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (req == NULL)
            return openssl_fail(c, ESTC_ERR_FORMAT, "no PEM CERTIFICATE REQUEST");
    } else {
        const unsigned char *q = p;
        req = d2i_X509_REQ(NULL, &q, (long)len);
        if (req == NULL)
            return openssl_fail(c, ESTC_ERR_FORMAT, "not a PKCS#10 request (PEM or DER)");
        if (q != p + len) {
            X509_REQ_free(req);
            return estc_error(c->ctx, ESTC_ERR_FORMAT, "%zu bytes after the PKCS#10 request",
                              (size_t)(p + len - q));
        }
    }
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    estc_err err = ESTC_OK;
    if (pub == NULL)
        err = openssl_fail(c, ESTC_ERR_FORMAT, "the CSR's public key");
    else if (X509_REQ_verify(req, pub) != 1)
        err = openssl_fail(c, ESTC_ERR_CRYPTO,
                           "the CSR's signature does not verify with its own public key");
    unsigned char *enc = NULL;
    int n = 0;
    if (err == ESTC_OK && der != NULL) {
        n = i2d_X509_REQ(req, &enc);
        err = n > 0 ? estc_buf_set(der, enc, (size_t)n)
                    : openssl_fail(c, ESTC_ERR_FORMAT, "encoding the CSR");
        OPENSSL_free(enc);
        enc = NULL;
    }
    if (err == ESTC_OK && spki != NULL) {
        n = i2d_PUBKEY(pub, &enc);
        err = n > 0 ? estc_buf_set(spki, enc, (size_t)n)
                    : openssl_fail(c, ESTC_ERR_FORMAT, "the CSR's public key");
        OPENSSL_free(enc);
        if (err != ESTC_OK && der != NULL)
            estc_buf_free(der);
    }
    ERR_clear_error();
    X509_REQ_free(req);
    return err;
}
