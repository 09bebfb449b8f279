/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PKCS#10 requests: subject and subjectAltName from the configuration (or
 * the current certificate for /sren), what /att asked for, and a signature
 * made through the estc provider, so the key never leaves its engine.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/store.h>
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

/* The key at @addr as an EVP_PKEY: OpenSSL's own loader for file:, the
 * estc provider's STORE for every other engine. */
static estc_err load_pkey_fail(estc_client *c, const char *addr)
{
    /* The provider leaves the engine's own reason (a plug-in that cannot be
     * loaded, a wrong PIN) in the detail: say it rather than OpenSSL's. */
    const char *why = estc_ctx_error_detail(c->ctx);
    if (why[0] == '\0')
        return openssl_fail(c, ESTC_ERR_NOT_FOUND, addr);
    char *copy = strdup(why);
    ERR_clear_error();
    estc_err err = estc_error(c->ctx, ESTC_ERR_NOT_FOUND, "%s: %s", addr,
                              copy != NULL ? copy : "the key cannot be loaded");
    free(copy);
    return err;
}

static estc_err load_pkey(estc_client *c, const char *addr, EVP_PKEY **out)
{
    ERR_clear_error(); /* a failure's detail is this load's */
    estc_ctx_clear_error(c->ctx);
    OSSL_STORE_CTX *store = OSSL_STORE_open(addr, NULL, NULL, NULL, NULL);
    if (store == NULL)
        return load_pkey_fail(c, addr);
    OSSL_STORE_expect(store, OSSL_STORE_INFO_PKEY);
    EVP_PKEY *pkey = NULL;
    while (pkey == NULL && !OSSL_STORE_eof(store)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(store);
        if (info == NULL)
            break;
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(store);
    if (pkey == NULL)
        return load_pkey_fail(c, addr);
    ERR_clear_error();
    *out = pkey;
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

estc_err estc__csr_build(estc_client *c, const char *key_addr, const X509_NAME *subject,
                         const GENERAL_NAMES *sans, const char *pop_b64, estc_buf *der)
{
    if (c->pop && pop_b64 != NULL) {
        char *copy = strdup(key_addr);
        if (copy == NULL)
            return ESTC_ERR_NOMEM;
        free(c->pop_key);
        c->pop_key = copy;
    }
    EVP_PKEY *pkey = NULL;
    estc_err err = load_pkey(c, key_addr, &pkey);
    if (err != ESTC_OK)
        return err;
    X509_REQ *req = X509_REQ_new();
    STACK_OF(X509_EXTENSION) *exts = NULL;
    if (req == NULL || X509_REQ_set_version(req, 0) != 1 ||
        X509_REQ_set_subject_name(req, subject) != 1 || X509_REQ_set_pubkey(req, pkey) != 1) {
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "building the CSR");
        goto done;
    }
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
    const EVP_MD *md = EVP_sha256();
    if (c->hints.hash == ESTC_HASH_SHA384 || (c->hints.hash == 0 && EVP_PKEY_get_bits(pkey) == 384))
        md = EVP_sha384();
    else if (c->hints.hash == ESTC_HASH_SHA512)
        md = EVP_sha512();
    if (X509_REQ_sign(req, pkey, md) <= 0) {
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "signing the CSR through the engine");
        goto done;
    }
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
    EVP_PKEY_free(pkey);
    return err;
}

estc_err estc__csr_key_check(estc_client *c, const estc_buf *csr, const estc_buf *spki)
{
    const unsigned char *p = csr->data;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)csr->len);
    EVP_PKEY *pub = req != NULL ? X509_REQ_get0_pubkey(req) : NULL;
    unsigned char *der = NULL;
    int n = pub != NULL ? i2d_PUBKEY(pub, &der) : -1;
    estc_err err;
    if (n <= 0)
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "the CSR's public key");
    else if ((size_t)n != spki->len || CRYPTO_memcmp(der, spki->data, spki->len) != 0)
        err = estc_error(c->ctx, ESTC_ERR_VALIDATION,
                         "the CSR's public key is not the one of the key just made: the key was "
                         "replaced after it was written (is its folder writable by others?); "
                         "nothing sent");
    else
        err = ESTC_OK;
    OPENSSL_free(der);
    X509_REQ_free(req);
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
    /* Another session: sign again with the same key and hash. */
    EVP_PKEY *pkey = NULL;
    estc_err err = c->pop_key != NULL
                       ? load_pkey(c, c->pop_key, &pkey)
                       : estc_error(c->ctx, ESTC_ERR_STATE, "proof-of-possession: no CSR key");
    if (err != ESTC_OK) {
        X509_REQ_free(req);
        return estc_error(c->ctx, err,
                          "proof-of-possession: the DTLS session changed after the CSR was "
                          "signed and its key is no longer there; try again");
    }
    int md_nid = NID_undef;
    const EVP_MD *md = NULL;
    if (OBJ_find_sigid_algs(X509_REQ_get_signature_nid(req), &md_nid, NULL) == 1)
        md = EVP_get_digestbynid(md_nid);
    unsigned char *enc = NULL;
    int n = 0;
    if (md == NULL || !set_challenge(req, b64) || X509_REQ_sign(req, pkey, md) <= 0 ||
        (n = i2d_X509_REQ(req, &enc)) <= 0)
        err = openssl_fail(c, ESTC_ERR_CRYPTO, "proof-of-possession: signing the CSR again");
    else
        err = estc_buf_set(out, enc, (size_t)n);
    *changed = err == ESTC_OK;
    OPENSSL_free(enc);
    EVP_PKEY_free(pkey);
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
