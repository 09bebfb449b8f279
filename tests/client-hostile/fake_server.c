/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fake EST server of the hostile-answer tests (see fake_server.h).
 */
#include "fake_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define CF_TEXT 0
#define CF_MULTIPART 62
#define CF_PKCS7 281
#define CF_PKCS8 284
#define CF_PKCS10 286

static EVP_PKEY *new_key(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

static bool add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    bool ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

static bool set_serial(X509 *x)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return false;
    raw[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
    bool ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

X509 *fake_make_ca(EVP_PKEY *key, const char *cn)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    bool ok =
        x != NULL && name != NULL && X509_set_version(x, 2) == 1 && set_serial(x) &&
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) == 1 &&
        X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1 &&
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) != NULL &&
        X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365) != NULL &&
        X509_set_pubkey(x, key) == 1 && add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") &&
        add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") &&
        add_ext(x, x, NID_subject_key_identifier, "hash") && X509_sign(x, key, EVP_sha256()) > 0;
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

bool fake_server_init(struct fake_server *fs, const char *ca_pem)
{
    memset(fs, 0, sizeof(*fs));
    fs->ca_key = new_key();
    fs->rogue_key = new_key();
    if (fs->ca_key == NULL || fs->rogue_key == NULL)
        return false;
    fs->ca = fake_make_ca(fs->ca_key, "Hostile Test CA");
    /* The rogue CA has the same name, so only the signature tells them apart. */
    fs->rogue = fake_make_ca(fs->rogue_key, "Hostile Test CA");
    if (fs->ca == NULL || fs->rogue == NULL)
        return false;
    FILE *f = fopen(ca_pem, "w");
    if (f == NULL)
        return false;
    bool ok = PEM_write_X509(f, fs->ca) == 1;
    return fclose(f) == 0 && ok;
}

void fake_server_done(struct fake_server *fs)
{
    X509_free(fs->ca);
    X509_free(fs->rogue);
    EVP_PKEY_free(fs->ca_key);
    EVP_PKEY_free(fs->rogue_key);
    memset(fs, 0, sizeof(*fs));
}

/* ---- what the fake issues ------------------------------------------------ */

static X509 *issue(struct fake_server *fs, enum fake_answer a, X509_REQ *req, EVP_PKEY *pub)
{
    X509 *signer = a == FAKE_UNTRUSTED ? fs->rogue : fs->ca;
    EVP_PKEY *signer_key = a == FAKE_UNTRUSTED ? fs->rogue_key : fs->ca_key;
    EVP_PKEY *other = a == FAKE_OTHER_KEY ? new_key() : NULL;
    X509 *x = X509_new();
    X509_NAME *wrong = NULL;
    bool ok = x != NULL && (a != FAKE_OTHER_KEY || other != NULL) && X509_set_version(x, 2) == 1 &&
              set_serial(x) && X509_set_issuer_name(x, X509_get_subject_name(signer)) == 1 &&
              X509_set_pubkey(x, other != NULL ? other : pub) == 1;
    long from = -60, to = 86400L * 30;
    if (a == FAKE_EXPIRED) {
        from = -2 * 86400L;
        to = -86400L;
    } else if (a == FAKE_NOT_YET_VALID) {
        from = 86400L;
    }
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), from) != NULL &&
         X509_gmtime_adj(X509_getm_notAfter(x), to) != NULL;
    if (ok && a == FAKE_WRONG_SUBJECT) {
        wrong = X509_NAME_new();
        ok = wrong != NULL &&
             X509_NAME_add_entry_by_txt(wrong, "CN", MBSTRING_UTF8,
                                        (const unsigned char *)"someone-else", -1, -1, 0) == 1 &&
             X509_set_subject_name(x, wrong) == 1;
    } else if (ok && a == FAKE_CASE_SUBJECT) {
        /* The test client asks for /CN=device-1/O=Example. */
        wrong = X509_NAME_new();
        ok = wrong != NULL &&
             X509_NAME_add_entry_by_txt(wrong, "CN", MBSTRING_UTF8,
                                        (const unsigned char *)"DEVICE-1", -1, -1, 0) == 1 &&
             X509_NAME_add_entry_by_txt(wrong, "O", MBSTRING_UTF8,
                                        (const unsigned char *)"Example", -1, -1, 0) == 1 &&
             X509_set_subject_name(x, wrong) == 1;
    } else if (ok) {
        ok = X509_set_subject_name(x, X509_REQ_get_subject_name(req)) == 1;
    }
    /* The requested subjectAltName, copied from the CSR's extensions. */
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    for (int i = 0; ok && i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) != NID_subject_alt_name)
            continue;
        if (a == FAKE_CHANGED_SAN)
            ok = add_ext(x, signer, NID_subject_alt_name, "DNS:other.example");
        else
            ok = X509_add_ext(x, e, -1) == 1;
    }
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    ok = ok && add_ext(x, signer, NID_basic_constraints, "critical,CA:FALSE") &&
         add_ext(x, signer, NID_key_usage, "critical,digitalSignature") &&
         add_ext(x, signer, NID_ext_key_usage, "clientAuth") &&
         X509_sign(x, signer_key, EVP_sha256()) > 0;
    X509_NAME_free(wrong);
    EVP_PKEY_free(other);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* certs-only PKCS#7 (CF 281) of @x, as `openssl crl2pkcs7` makes it. */
static bool pkcs7_of(X509 *x, estc_buf *out)
{
    PKCS7 *p7 = PKCS7_new();
    bool ok = p7 != NULL && PKCS7_set_type(p7, NID_pkcs7_signed) == 1 &&
              PKCS7_content_new(p7, NID_pkcs7_data) == 1 && PKCS7_add_certificate(p7, x) == 1;
    unsigned char *der = NULL;
    int n = ok ? i2d_PKCS7(p7, &der) : -1;
    ok = n > 0 && estc_buf_set(out, der, (size_t)n) == ESTC_OK;
    OPENSSL_free(der);
    PKCS7_free(p7);
    return ok;
}

/* ---- multipart-core (RFC 8710): CBOR array of [cf, bstr]* ----------------- */

static bool cbor_head(estc_buf *b, unsigned major, size_t v)
{
    uint8_t h[3];
    size_t n;
    if (v < 24) {
        h[0] = (uint8_t)(major << 5 | v);
        n = 1;
    } else if (v < 256) {
        h[0] = (uint8_t)(major << 5 | 24);
        h[1] = (uint8_t)v;
        n = 2;
    } else if (v < 65536) {
        h[0] = (uint8_t)(major << 5 | 25);
        h[1] = (uint8_t)(v >> 8);
        h[2] = (uint8_t)v;
        n = 3;
    } else {
        return false;
    }
    uint8_t *g = realloc(b->data, b->len + n);
    if (g == NULL)
        return false;
    memcpy(g + b->len, h, n);
    b->data = g;
    b->len += n;
    return true;
}

static bool cbor_bytes(estc_buf *b, const estc_buf *v)
{
    if (!cbor_head(b, 2, v->len))
        return false;
    uint8_t *g = realloc(b->data, b->len + v->len);
    if (g == NULL)
        return false;
    memcpy(g + b->len, v->data, v->len);
    b->data = g;
    b->len += v->len;
    return true;
}

/* ---- the request handler --------------------------------------------------- */

static bool ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && strcmp(s + a - b, tail) == 0;
}

static estc_err answer_certs(estc_response *resp, int code, enum fake_answer a, X509 *x)
{
    resp->code = code;
    resp->content_format = CF_PKCS7;
    if (!pkcs7_of(x, &resp->payload))
        return ESTC_ERR_NOMEM;
    if (a == FAKE_WRONG_CF)
        resp->content_format = CF_TEXT;
    else if (a == FAKE_TRUNCATED)
        resp->payload.len /= 2;
    else if (a == FAKE_GARBAGE)
        for (size_t i = 0; i < resp->payload.len; i++)
            resp->payload.data[i] = (uint8_t)(i * 37 + 11);
    return ESTC_OK;
}

static estc_err fake_request(void *impl, const estc_request *req, estc_response *resp, char *detail,
                             size_t detail_len)
{
    struct fake_server *fs = impl;
    enum fake_answer a = FAKE_GOOD;
    fs->total++;
    if (fs->target != NULL && strcmp(req->path, fs->target) == 0) {
        a = fs->answer;
        fs->requests++;
    }
    resp->max_age = 60;
    if (a == FAKE_ENDLESS_503 || a == FAKE_LONG_503) {
        resp->code = 503;
        resp->max_age = a == FAKE_LONG_503 ? 86400 : 0;
        resp->has_max_age = true;
        return ESTC_OK;
    }
    if (a == FAKE_BAD_REQUEST) {
        resp->code = 400;
        return estc_buf_set(&resp->payload, FAKE_DIAGNOSTIC, strlen(FAKE_DIAGNOSTIC));
    }
    if (ends_with(req->path, "/crts") && req->method == ESTC_COAP_GET)
        return answer_certs(resp, 205, a, fs->ca);

    bool sen = ends_with(req->path, "/sen"), sren = ends_with(req->path, "/sren");
    bool skg = ends_with(req->path, "/skg");
    if (req->method != ESTC_COAP_POST || !(sen || sren || skg)) {
        resp->code = 404;
        return ESTC_OK;
    }
    const unsigned char *p = req->payload;
    X509_REQ *csr =
        req->content_format == CF_PKCS10 ? d2i_X509_REQ(NULL, &p, (long)req->payload_len) : NULL;
    EVP_PKEY *pub = csr != NULL ? X509_REQ_get0_pubkey(csr) : NULL;
    if (pub == NULL || X509_REQ_verify(csr, pub) != 1) {
        /* The client under test must never send a bad CSR. */
        snprintf(detail, detail_len, "fake server: the CSR does not verify");
        X509_REQ_free(csr);
        ERR_clear_error();
        return ESTC_ERR_PROTOCOL;
    }
    EVP_PKEY *made = skg ? new_key() : NULL;
    X509 *x = (skg && made == NULL) ? NULL : issue(fs, a, csr, made != NULL ? made : pub);
    estc_err err = x == NULL ? ESTC_ERR_CRYPTO : ESTC_OK;
    if (err == ESTC_OK && !skg)
        err = answer_certs(resp, 204, a, x);
    if (err == ESTC_OK && skg) {
        estc_buf key = {0}, p7 = {0}, *mp = &resp->payload;
        PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(made);
        unsigned char *der = NULL;
        int n = p8 != NULL ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
        bool ok = n > 0 && estc_buf_set(&key, der, (size_t)n) == ESTC_OK && pkcs7_of(x, &p7);
        if (a == FAKE_NO_KEY)
            ok = ok && cbor_head(mp, 4, 2);
        else
            ok = ok && cbor_head(mp, 4, 4) && cbor_head(mp, 0, CF_PKCS8) && cbor_bytes(mp, &key);
        ok = ok && cbor_head(mp, 0, CF_PKCS7) && cbor_bytes(mp, &p7);
        resp->code = 204;
        resp->content_format = CF_MULTIPART;
        OPENSSL_clear_free(der, n > 0 ? (size_t)n : 0);
        PKCS8_PRIV_KEY_INFO_free(p8);
        estc_buf_free(&key);
        estc_buf_free(&p7);
        err = ok ? ESTC_OK : ESTC_ERR_NOMEM;
    }
    X509_free(x);
    EVP_PKEY_free(made);
    X509_REQ_free(csr);
    return err;
}

static const estc_transport_ops fake_ops = {
    .api_version = ESTC_TRANSPORT_API_VERSION,
    .name = "fake-server",
    .request = fake_request,
};

estc_transport *fake_server_transport(struct fake_server *fs)
{
    estc_transport *t = NULL;
    return estc_transport_new(&fake_ops, fs, &t) == ESTC_OK ? t : NULL;
}
