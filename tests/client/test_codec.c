/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Codec tests: the RFC 9148 example payloads parse to what the RFC says, and
 * hostile inputs (truncated, wrong tags, huge lengths, trailing bytes, BER,
 * signers, nesting) give a clear error and never crash.
 *
 * Usage: test-codec VECTOR_DIR
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include "codec.h"
#include "../fixtures/check_main.h"

static const char *vector_dir;

static uint8_t *load(const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", vector_dir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    uint8_t *buf = malloc(1024 * 1024);
    ck_assert_ptr_nonnull(buf);
    *len = fread(buf, 1, 1024 * 1024, f);
    fclose(f);
    ck_assert_uint_gt(*len, 0);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Content-Format table                                                      */
/* ------------------------------------------------------------------------ */

START_TEST(cf_table)
{
    ck_assert_str_eq(estc__cf_media_type(286), "application/pkcs10");
    ck_assert_str_eq(estc__cf_media_type(287), "application/pkix-cert");
    ck_assert_str_eq(estc__cf_media_type(62), "application/multipart-core");
    ck_assert_str_eq(estc__cf_media_type(40), "application/link-format");
    ck_assert_str_eq(estc__cf_media_type(285), "application/csrattrs");
    ck_assert_str_eq(estc__cf_media_type(284), "application/pkcs8");
    ck_assert_ptr_nonnull(strstr(estc__cf_media_type(281), "certs-only"));
    ck_assert_ptr_nonnull(strstr(estc__cf_media_type(280), "server-generated-key"));
    ck_assert_ptr_null(estc__cf_media_type(0));
    ck_assert_ptr_null(estc__cf_media_type(-1));
    ck_assert(estc__cf_is_cert(281) && estc__cf_is_cert(287));
    ck_assert(!estc__cf_is_cert(286) && !estc__cf_is_cert(62));
    ck_assert_uint_gt(estc__cf_max_size(281), 0);
    ck_assert_uint_eq(estc__cf_max_size(1234), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* DER helpers                                                               */
/* ------------------------------------------------------------------------ */

START_TEST(der_reader_strict)
{
    estc__der_tlv t;
    /* Indefinite length, non-minimal long form, leading zero, too long. */
    static const uint8_t indef[] = {0x30, 0x80, 0x00, 0x00};
    static const uint8_t long_short[] = {0x30, 0x81, 0x01, 0x00};
    static const uint8_t lead0[] = {0x30, 0x82, 0x00, 0x81};
    static const uint8_t huge[] = {0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00};
    static const uint8_t five[] = {0x30, 0x85, 0x01, 0x00, 0x00, 0x00, 0x00};
    static const uint8_t high_tag[] = {0x1f, 0x81, 0x01, 0x00};
    static const uint8_t ok[] = {0x30, 0x03, 0x02, 0x01, 0x05};
    const struct {
        const uint8_t *p;
        size_t len;
    } bad[] = {{indef, sizeof(indef)},
               {long_short, sizeof(long_short)},
               {lead0, sizeof(lead0)},
               {huge, sizeof(huge)},
               {five, sizeof(five)},
               {high_tag, sizeof(high_tag)},
               {ok, 1},
               {ok, 4}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        estc__der cur = {bad[i].p, bad[i].len};
        ck_assert_int_eq(estc__der_next(&cur, &t), ESTC_ERR_FORMAT);
    }
    estc__der cur = {ok, sizeof(ok)};
    ck_assert_int_eq(estc__der_next(&cur, &t), ESTC_OK);
    ck_assert_uint_eq(t.tag, 0x30);
    ck_assert_uint_eq(t.contents.len, 3);
    ck_assert_uint_eq(cur.len, 0);
    ck_assert_int_eq(estc__der_check_tree(&t), ESTC_OK);
    ck_assert_int_eq(estc__der_next(NULL, &t), ESTC_ERR_INVALID_ARG);

    char text[ESTC__OID_TEXT_MAX];
    static const uint8_t oid_cp[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07};
    estc__der oc = {oid_cp, sizeof(oid_cp)};
    ck_assert_int_eq(estc__der_oid_text(&oc, text), ESTC_OK);
    ck_assert_str_eq(text, "1.2.840.113549.1.9.7");
    static const uint8_t oid_2999[] = {0x88, 0x37, 0x01};
    estc__der o2 = {oid_2999, sizeof(oid_2999)};
    ck_assert_int_eq(estc__der_oid_text(&o2, text), ESTC_OK);
    ck_assert_str_eq(text, "2.999.1");
    static const uint8_t oid_unfinished[] = {0x2a, 0x86};
    estc__der o3 = {oid_unfinished, sizeof(oid_unfinished)};
    ck_assert_int_eq(estc__der_oid_text(&o3, text), ESTC_ERR_FORMAT);
    static const uint8_t oid_nonmin[] = {0x2a, 0x80, 0x01};
    estc__der o4 = {oid_nonmin, sizeof(oid_nonmin)};
    ck_assert_int_eq(estc__der_oid_text(&o4, text), ESTC_ERR_FORMAT);
    estc__der o5 = {oid_cp, 0};
    ck_assert_int_eq(estc__der_oid_text(&o5, text), ESTC_ERR_FORMAT);

    /* Deep nesting is refused by the tree check. */
    uint8_t deep[2 * 40];
    for (size_t i = 0; i < 40; i++) {
        deep[2 * i] = 0x30;
        deep[2 * i + 1] = (uint8_t)(2 * (40 - i - 1));
    }
    estc__der dc = {deep, sizeof(deep)};
    ck_assert_int_eq(estc__der_next(&dc, &t), ESTC_OK);
    ck_assert_int_eq(estc__der_check_tree(&t), ESTC_ERR_FORMAT);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */
/* ------------------------------------------------------------------------ */

static void check_one_cert(const char *file, const char *subject_part)
{
    size_t len;
    uint8_t *in = load(file, &len);
    estc__der_list certs;
    ck_assert_int_eq(estc__codec_certs_only(in, len, &certs), ESTC_OK);
    ck_assert_uint_eq(certs.n, 1);
    const unsigned char *p = certs.items[0].data;
    X509 *x = d2i_X509(NULL, &p, (long)certs.items[0].len);
    ck_assert_ptr_nonnull(x);
    char name[256];
    X509_NAME_oneline(X509_get_subject_name(x), name, sizeof(name));
    ck_assert_msg(strstr(name, subject_part) != NULL, "subject %s", name);
    X509_free(x);

    /* The same certificate as CF 287, and with a trailing byte. */
    estc__der_list one;
    ck_assert_int_eq(estc__codec_pkix_cert(certs.items[0].data, certs.items[0].len, &one), ESTC_OK);
    ck_assert_uint_eq(one.n, 1);
    ck_assert_mem_eq(one.items[0].data, certs.items[0].data, certs.items[0].len);
    estc__der_list_free(&one);
    uint8_t *longer = malloc(certs.items[0].len + 1);
    ck_assert_ptr_nonnull(longer);
    memcpy(longer, certs.items[0].data, certs.items[0].len);
    longer[certs.items[0].len] = 0;
    ck_assert_int_eq(estc__codec_pkix_cert(longer, certs.items[0].len + 1, &one), ESTC_ERR_FORMAT);
    ck_assert_uint_eq(one.n, 0);
    ck_assert_ptr_null(one.items);
    free(longer);
    /* Dispatch by Content-Format. */
    ck_assert_int_eq(estc__codec_certs(287, certs.items[0].data, certs.items[0].len, &one),
                     ESTC_OK);
    estc__der_list_free(&one);
    ck_assert_int_eq(estc__codec_certs(281, in, len, &one), ESTC_OK);
    estc__der_list_free(&one);
    ck_assert_int_eq(estc__codec_certs(284, in, len, &one), ESTC_ERR_PROTOCOL);
    ck_assert_int_eq(estc__codec_certs(287, in, len, &one), ESTC_ERR_FORMAT);
    ck_assert_int_eq(estc__codec_certs(281, certs.items[0].data, certs.items[0].len, &one),
                     ESTC_ERR_FORMAT);

    estc__der_list_free(&certs);
    ck_assert_uint_eq(certs.n, 0);
    estc__der_list_free(&certs); /* twice is harmless */
    free(in);
}

START_TEST(certs_rfc_vectors)
{
    check_one_cert("crts-response-281.der", "");
    check_one_cert("sen-response-281.der", "");
    check_one_cert("skg-response-part-281.der", "");
    check_one_cert("crts-response-281-draft12.der", "");
}
END_TEST

/* Every prefix of every vector is refused, never accepted or crashed on. */
START_TEST(certs_truncated)
{
    const char *files[] = {"crts-response-281.der", "sen-response-281.der",
                           "crts-response-281-draft12.der"};
    for (size_t f = 0; f < 3; f++) {
        size_t len;
        uint8_t *in = load(files[f], &len);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut + 1); /* exact size, so ASan sees overreads */
            ck_assert_ptr_nonnull(copy);
            memcpy(copy, in, cut);
            estc__der_list certs;
            estc_err err = estc__codec_certs_only(copy, cut, &certs);
            ck_assert_msg(err == ESTC_ERR_FORMAT, "%s cut at %zu: %d", files[f], cut, err);
            ck_assert_uint_eq(certs.n, 0);
            ck_assert_int_eq(estc__codec_pkix_cert(copy, cut, &certs), ESTC_ERR_FORMAT);
            free(copy);
        }
        free(in);
    }
}
END_TEST

/* Flip every byte: whatever the result, no crash, and a clean list on error. */
START_TEST(certs_mutated)
{
    size_t len;
    uint8_t *in = load("crts-response-281.der", &len);
    for (size_t i = 0; i < len; i++) {
        for (int v = 0; v < 3; v++) {
            uint8_t *copy = malloc(len);
            ck_assert_ptr_nonnull(copy);
            memcpy(copy, in, len);
            copy[i] = v == 0 ? (uint8_t)(copy[i] ^ 0xff) : v == 1 ? 0x80 : 0x00;
            estc__der_list certs;
            estc_err err = estc__codec_certs_only(copy, len, &certs);
            if (err != ESTC_OK) {
                ck_assert_int_eq(err, ESTC_ERR_FORMAT);
                ck_assert_uint_eq(certs.n, 0);
            }
            estc__der_list_free(&certs);
            free(copy);
        }
    }
    free(in);
}
END_TEST

START_TEST(certs_hostile_forms)
{
    size_t len;
    uint8_t *in = load("crts-response-281.der", &len);
    estc__der_list certs;
    uint8_t *copy = malloc(len + 16);
    ck_assert_ptr_nonnull(copy);

    /* Trailing byte after the ContentInfo. */
    memcpy(copy, in, len);
    copy[len] = 0;
    ck_assert_int_eq(estc__codec_certs_only(copy, len + 1, &certs), ESTC_ERR_FORMAT);
    /* Huge outer length. */
    memcpy(copy, in, len);
    copy[1] = 0x84;
    ck_assert_int_eq(estc__codec_certs_only(copy, len, &certs), ESTC_ERR_FORMAT);
    /* Indefinite outer length (BER). */
    copy[1] = 0x80;
    ck_assert_int_eq(estc__codec_certs_only(copy, len, &certs), ESTC_ERR_FORMAT);
    /* Wrong outer tag (SET instead of SEQUENCE). */
    memcpy(copy, in, len);
    copy[0] = 0x31;
    ck_assert_int_eq(estc__codec_certs_only(copy, len, &certs), ESTC_ERR_FORMAT);
    /* envelopedData instead of signedData (last OID byte 2 -> 3). */
    memcpy(copy, in, len);
    ck_assert_uint_eq(copy[14], 0x02);
    copy[14] = 0x03;
    ck_assert_int_eq(estc__codec_certs_only(copy, len, &certs), ESTC_ERR_FORMAT);
    /* NULL and empty input; over the size cap. */
    ck_assert_int_eq(estc__codec_certs_only(NULL, 0, &certs), ESTC_ERR_FORMAT);
    ck_assert_int_eq(estc__codec_certs_only(NULL, 5, &certs), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__codec_certs_only(in, len, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__codec_certs_only(in, ESTC__MAX_CERTS_SIZE + 1, &certs), ESTC_ERR_LIMIT);
    free(copy);
    free(in);
}
END_TEST

/* Build a PKCS#7 with OpenSSL: with a signer, with content, or certs-only
 * with @ncerts copies of a certificate. */
static X509 *vector_cert(void)
{
    size_t len;
    uint8_t *in = load("crts-response-281.der", &len);
    estc__der_list certs;
    ck_assert_int_eq(estc__codec_certs_only(in, len, &certs), ESTC_OK);
    const unsigned char *p = certs.items[0].data;
    X509 *x = d2i_X509(NULL, &p, (long)certs.items[0].len);
    ck_assert_ptr_nonnull(x);
    estc__der_list_free(&certs);
    free(in);
    return x;
}

/* An empty degenerate SignedData: id-data without content, as crl2pkcs7 makes. */
static PKCS7 *certs_only_p7(void)
{
    PKCS7 *p7 = PKCS7_new();
    ck_assert_ptr_nonnull(p7);
    ck_assert_int_eq(PKCS7_set_type(p7, NID_pkcs7_signed), 1);
    p7->d.sign->contents->type = OBJ_nid2obj(NID_pkcs7_data);
    return p7;
}

static uint8_t *p7_der(PKCS7 *p7, size_t *len)
{
    unsigned char *der = NULL;
    int n = i2d_PKCS7(p7, &der);
    ck_assert_int_gt(n, 0);
    *len = (size_t)n;
    return der;
}

/* @p7 in DER through estc__codec_certs_only, which must return @want; the
 * number of certificates it reports. */
static size_t certs_only_of(PKCS7 *p7, estc_err want)
{
    size_t len;
    uint8_t *der = p7_der(p7, &len);
    estc__der_list certs;
    ck_assert_int_eq(estc__codec_certs_only(der, len, &certs), want);
    size_t n = certs.n;
    if (want == ESTC_OK)
        estc__der_list_free(&certs);
    OPENSSL_free(der);
    return n;
}

START_TEST(certs_signed_or_with_content)
{
    /* A real signed message (signer present, content present). */
    EVP_PKEY *key = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(key);
    X509 *signer = X509_new();
    ck_assert_ptr_nonnull(signer);
    ASN1_INTEGER_set(X509_get_serialNumber(signer), 7);
    X509_gmtime_adj(X509_getm_notBefore(signer), 0);
    X509_gmtime_adj(X509_getm_notAfter(signer), 3600);
    X509_NAME *name = X509_get_subject_name(signer);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"signer", -1, -1,
                               0);
    X509_set_issuer_name(signer, name);
    X509_set_pubkey(signer, key);
    ck_assert_int_gt(X509_sign(signer, key, EVP_sha256()), 0);
    BIO *data = BIO_new_mem_buf("hello", 5);
    PKCS7 *p7 = PKCS7_sign(signer, key, NULL, data, PKCS7_BINARY | PKCS7_NOSMIMECAP);
    ck_assert_ptr_nonnull(p7);
    certs_only_of(p7, ESTC_ERR_FORMAT);
    PKCS7_free(p7);
    BIO_free(data);

    /* Detached signature: no content, but a signer. */
    data = BIO_new_mem_buf("hello", 5);
    p7 = PKCS7_sign(signer, key, NULL, data, PKCS7_BINARY | PKCS7_DETACHED | PKCS7_NOSMIMECAP);
    ck_assert_ptr_nonnull(p7);
    certs_only_of(p7, ESTC_ERR_FORMAT);
    PKCS7_free(p7);
    BIO_free(data);

    /* id-data with an empty OCTET STRING, as OpenSSL's PKCS7 writer emits
     * a certs-only bag, carries no content: accepted for interoperability. */
    X509 *root = vector_cert();
    p7 = PKCS7_new();
    ck_assert_ptr_nonnull(p7);
    ck_assert_int_eq(PKCS7_set_type(p7, NID_pkcs7_signed), 1);
    ck_assert_int_eq(PKCS7_content_new(p7, NID_pkcs7_data), 1);
    ck_assert_int_eq(PKCS7_add_certificate(p7, root), 1);
    ck_assert_uint_eq(certs_only_of(p7, ESTC_OK), 1);

    /* The same bag with one byte of content is not certs-only. */
    ck_assert_int_eq(ASN1_OCTET_STRING_set(p7->d.sign->contents->d.data,
                                           (const unsigned char *)"x", 1),
                     1);
    ck_assert_uint_eq(certs_only_of(p7, ESTC_ERR_FORMAT), 0);
    PKCS7_free(p7);

    /* The certs-only form of `openssl crl2pkcs7` is accepted, with two certificates. */
    p7 = certs_only_p7();
    ck_assert_int_eq(PKCS7_add_certificate(p7, signer), 1);
    ck_assert_int_eq(PKCS7_add_certificate(p7, root), 1);
    ck_assert_uint_eq(certs_only_of(p7, ESTC_OK), 2);

    /* More certificates than the cap. */
    for (int i = 0; i < ESTC__MAX_CERTS; i++)
        ck_assert_int_eq(PKCS7_add_certificate(p7, root), 1);
    ck_assert_uint_eq(certs_only_of(p7, ESTC_ERR_LIMIT), 0);
    PKCS7_free(p7);

    /* Certs-only but without any certificate. */
    p7 = certs_only_p7();
    certs_only_of(p7, ESTC_ERR_FORMAT);
    PKCS7_free(p7);

    X509_free(root);
    X509_free(signer);
    EVP_PKEY_free(key);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* multipart-core                                                            */
/* ------------------------------------------------------------------------ */

START_TEST(multipart_rfc_vectors)
{
    size_t len, klen, clen;
    uint8_t *in = load("skg-response-62.cbor", &len);
    uint8_t *key = load("skg-response-part-284.der", &klen);
    uint8_t *cert = load("skg-response-part-281.der", &clen);
    estc__multipart mp;
    ck_assert_int_eq(estc__codec_multipart(in, len, &mp), ESTC_OK);
    ck_assert_uint_eq(mp.n, 2);
    ck_assert_int_eq(mp.parts[0].cf, 284);
    ck_assert(mp.parts[0].present);
    ck_assert_uint_eq(mp.parts[0].data.len, klen);
    ck_assert_mem_eq(mp.parts[0].data.data, key, klen);
    ck_assert_int_eq(mp.parts[1].cf, 281);
    ck_assert_uint_eq(mp.parts[1].data.len, clen);
    ck_assert_mem_eq(mp.parts[1].data.data, cert, clen);
    ck_assert_ptr_eq(estc__multipart_find(&mp, 281), &mp.parts[1]);
    ck_assert_ptr_null(estc__multipart_find(&mp, 287));

    /* The 281 part parses as a certificate bag. */
    estc__der_list certs;
    ck_assert_int_eq(estc__codec_certs_only(mp.parts[1].data.data, mp.parts[1].data.len, &certs),
                     ESTC_OK);
    ck_assert_uint_eq(certs.n, 1);
    estc__der_list_free(&certs);

    /* Encoding the parts gives the RFC bytes back. */
    estc_buf enc = {NULL, 0};
    ck_assert_int_eq(estc__multipart_encode(mp.parts, mp.n, &enc), ESTC_OK);
    ck_assert_uint_eq(enc.len, len);
    ck_assert_mem_eq(enc.data, in, len);
    estc_buf_free(&enc);
    estc__multipart_free(&mp);
    ck_assert_uint_eq(mp.n, 0);
    free(in);
    free(key);
    free(cert);

    in = load("multipart-example-sec5.3.cbor", &len);
    ck_assert_int_eq(estc__codec_multipart(in, len, &mp), ESTC_OK);
    ck_assert_uint_eq(mp.n, 2);
    static const uint8_t p1[] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    ck_assert_int_eq(mp.parts[0].cf, 284);
    ck_assert_mem_eq(mp.parts[0].data.data, p1, 8);
    ck_assert_int_eq(mp.parts[1].cf, 281);
    estc__multipart_free(&mp);
    free(in);
}
END_TEST

START_TEST(multipart_null_and_empty)
{
    /* [284, null, 281, h''] and the empty array. */
    static const uint8_t absent[] = {0x84, 0x19, 0x01, 0x1c, 0xf6, 0x19, 0x01, 0x19, 0x40};
    estc__multipart mp;
    ck_assert_int_eq(estc__codec_multipart(absent, sizeof(absent), &mp), ESTC_OK);
    ck_assert_uint_eq(mp.n, 2);
    ck_assert(!mp.parts[0].present);
    ck_assert_uint_eq(mp.parts[0].data.len, 0);
    ck_assert(mp.parts[1].present);
    ck_assert_uint_eq(mp.parts[1].data.len, 0);
    estc_buf enc = {NULL, 0};
    ck_assert_int_eq(estc__multipart_encode(mp.parts, mp.n, &enc), ESTC_OK);
    ck_assert_uint_eq(enc.len, sizeof(absent));
    ck_assert_mem_eq(enc.data, absent, sizeof(absent));
    estc_buf_free(&enc);
    estc__multipart_free(&mp);
    static const uint8_t empty[] = {0x80};
    ck_assert_int_eq(estc__codec_multipart(empty, 1, &mp), ESTC_OK);
    ck_assert_uint_eq(mp.n, 0);
    estc__multipart_free(&mp);
}
END_TEST

START_TEST(multipart_hostile)
{
    static const struct {
        const char *what;
        uint8_t bytes[16];
        size_t len;
        estc_err want;
    } cases[] = {
        {"empty input", {0}, 0, ESTC_ERR_FORMAT},
        {"odd count", {0x83, 0x00, 0x40, 0x00}, 4, ESTC_ERR_FORMAT},
        {"indefinite array", {0x9f, 0x00, 0x40, 0xff}, 4, ESTC_ERR_FORMAT},
        {"indefinite bstr", {0x82, 0x00, 0x5f, 0x41, 0x00, 0xff}, 6, ESTC_ERR_FORMAT},
        {"nested array", {0x82, 0x00, 0x82, 0x00, 0x40}, 5, ESTC_ERR_FORMAT},
        {"map", {0xa1, 0x00, 0x40}, 3, ESTC_ERR_FORMAT},
        {"text part", {0x82, 0x00, 0x61, 0x41}, 4, ESTC_ERR_FORMAT},
        {"tagged part", {0x82, 0x00, 0xc2, 0x40}, 4, ESTC_ERR_FORMAT},
        {"negative cf", {0x82, 0x20, 0x40}, 3, ESTC_ERR_FORMAT},
        {"cf over 65535", {0x82, 0x1a, 0x00, 0x01, 0x00, 0x00, 0x40}, 7, ESTC_ERR_FORMAT},
        {"cf is bstr", {0x82, 0x40, 0x40}, 3, ESTC_ERR_FORMAT},
        {"trailing byte", {0x82, 0x00, 0x40, 0x00}, 4, ESTC_ERR_FORMAT},
        {"huge bstr",
         {0x82, 0x00, 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
         11,
         ESTC_ERR_FORMAT},
        {"bstr past end", {0x82, 0x00, 0x45, 0x01, 0x02}, 5, ESTC_ERR_FORMAT},
        {"huge count", {0x9b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02}, 9, ESTC_ERR_FORMAT},
        {"absurd count", {0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe}, 9, ESTC_ERR_LIMIT},
        {"reserved ai", {0x9c}, 1, ESTC_ERR_FORMAT},
        {"truncated head", {0x82, 0x19, 0x01}, 3, ESTC_ERR_FORMAT},
        {"missing part", {0x82, 0x00}, 2, ESTC_ERR_FORMAT},
        {"too many parts", {0x92}, 1, ESTC_ERR_LIMIT},
        {"undefined simple", {0x82, 0x00, 0xf7}, 3, ESTC_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t *copy = malloc(cases[i].len + 1);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, cases[i].bytes, cases[i].len);
        estc__multipart mp;
        estc_err err = estc__codec_multipart(copy, cases[i].len, &mp);
        ck_assert_msg(err == cases[i].want, "%s: got %s", cases[i].what, estc_err_name(err));
        ck_assert_uint_eq(mp.n, 0);
        ck_assert_ptr_null(mp.parts);
        free(copy);
    }
    estc__multipart mp;
    ck_assert_int_eq(estc__codec_multipart(NULL, 3, &mp), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__codec_multipart(NULL, 0, NULL), ESTC_ERR_INVALID_ARG);
    static const uint8_t big[1] = {0x80};
    ck_assert_int_eq(estc__codec_multipart(big, ESTC__MAX_MULTIPART_SIZE + 1, &mp), ESTC_ERR_LIMIT);

    /* Every prefix of the RFC example is refused. */
    size_t len;
    uint8_t *in = load("skg-response-62.cbor", &len);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut + 1);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, in, cut);
        ck_assert_int_eq(estc__codec_multipart(copy, cut, &mp), ESTC_ERR_FORMAT);
        free(copy);
    }
    free(in);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* CSR attributes                                                            */
/* ------------------------------------------------------------------------ */

START_TEST(csrattrs_rfc_vector)
{
    size_t len;
    uint8_t *in = load("att-response-285.der", &len);
    estc__csrattrs attrs;
    ck_assert_int_eq(estc__codec_csrattrs(in, len, &attrs), ESTC_OK);
    ck_assert_uint_eq(attrs.n, 6);
    ck_assert_int_eq(attrs.items[0].kind, ESTC__CSRATTR_OID);
    ck_assert_str_eq(attrs.items[0].oid, "1.3.6.1.1.1.1.22"); /* macAddress */
    ck_assert_int_eq(attrs.items[1].kind, ESTC__CSRATTR_ATTRIBUTE);
    ck_assert_str_eq(attrs.items[1].oid, "2.999.1");
    ck_assert_uint_eq(attrs.items[1].values.n, 1);
    ck_assert_uint_eq(attrs.items[1].values.items[0].data[0], 0x13); /* PrintableString */
    ck_assert_str_eq(attrs.items[2].oid, "1.2.840.113549.1.9.7");
    ck_assert_int_eq(attrs.items[2].kind, ESTC__CSRATTR_OID);
    ck_assert_str_eq(attrs.items[3].oid, "2.999.2");
    ck_assert_uint_eq(attrs.items[3].values.n, 3);
    ck_assert_str_eq(attrs.items[4].oid, "1.3.36.3.3.2.8.1.1.11");  /* brainpoolP384r1 */
    ck_assert_str_eq(attrs.items[5].oid, "2.16.840.1.101.3.4.2.2"); /* sha384 */
    ck_assert_uint_eq(attrs.items[5].oid_der.len, 11);
    ck_assert_uint_eq(attrs.items[5].oid_der.data[0], 0x06);
    ck_assert_ptr_eq(estc__csrattrs_find(&attrs, "2.999.2"), &attrs.items[3]);
    ck_assert_ptr_null(estc__csrattrs_find(&attrs, "2.999.9"));

    estc__csr_hints hints;
    ck_assert_int_eq(estc__csrattrs_hints(&attrs, &hints), ESTC_OK);
    ck_assert_int_eq(hints.hash, ESTC_HASH_SHA384);
    ck_assert(hints.challenge_password);
    ck_assert_int_eq(hints.key_type, 0); /* brainpool: not one we make */
    ck_assert_uint_eq(hints.extension_request.len, 0);
    estc__csr_hints_free(&hints);
    estc__csrattrs_free(&attrs);
    ck_assert_uint_eq(attrs.n, 0);

    for (size_t cut = 1; cut < len; cut++) {
        uint8_t *copy = malloc(cut);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, in, cut);
        ck_assert_int_eq(estc__codec_csrattrs(copy, cut, &attrs), ESTC_ERR_FORMAT);
        ck_assert_uint_eq(attrs.n, 0);
        free(copy);
    }
    for (size_t i = 0; i < len; i++) {
        uint8_t *copy = malloc(len);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, in, len);
        copy[i] ^= 0xa5;
        estc_err err = estc__codec_csrattrs(copy, len, &attrs);
        ck_assert(err == ESTC_OK || err == ESTC_ERR_FORMAT);
        estc__csrattrs_free(&attrs);
        free(copy);
    }
    free(in);
}
END_TEST

START_TEST(csrattrs_forms)
{
    estc__csrattrs attrs;
    /* Empty payload and empty SEQUENCE: no attributes. */
    ck_assert_int_eq(estc__codec_csrattrs(NULL, 0, &attrs), ESTC_OK);
    ck_assert_uint_eq(attrs.n, 0);
    static const uint8_t empty_seq[] = {0x30, 0x00};
    ck_assert_int_eq(estc__codec_csrattrs(empty_seq, 2, &attrs), ESTC_OK);
    ck_assert_uint_eq(attrs.n, 0);

    /* { id-ecPublicKey, SET { secp384r1 } }, ecdsa-with-SHA256, extensionRequest. */
    static const uint8_t ec[] = {
        0x30, 0x33,                                                       /* */
        0x30, 0x12, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, /* ecPublicKey */
        0x31, 0x07, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22,             /* secp384r1 */
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,       /* ecdsa-sha256 */
        0x30, 0x13, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e, /* extReq */
        0x31, 0x06, 0x30, 0x04, 0x30, 0x02, 0x06, 0x00, /* Extensions */
    };
    ck_assert_int_eq(estc__codec_csrattrs(ec, sizeof(ec), &attrs), ESTC_OK);
    ck_assert_uint_eq(attrs.n, 3);
    estc__csr_hints hints;
    ck_assert_int_eq(estc__csrattrs_hints(&attrs, &hints), ESTC_OK);
    ck_assert_int_eq(hints.key_type, ESTC_KEY_EC_P384);
    ck_assert_int_eq(hints.hash, ESTC_HASH_SHA256);
    ck_assert(!hints.challenge_password);
    ck_assert_uint_eq(hints.extension_request.len, 6);
    ck_assert_uint_eq(hints.extension_request.data[0], 0x30);
    estc__csr_hints_free(&hints);
    estc__csrattrs_free(&attrs);

    static const struct {
        const char *what;
        uint8_t bytes[24];
        size_t len;
        estc_err want;
    } bad[] = {
        {"not a SEQUENCE", {0x31, 0x00}, 2, ESTC_ERR_FORMAT},
        {"INTEGER item", {0x30, 0x03, 0x02, 0x01, 0x01}, 5, ESTC_ERR_FORMAT},
        {"attribute with empty SET",
         {0x30, 0x07, 0x30, 0x05, 0x06, 0x01, 0x2a, 0x31, 0x00},
         9,
         ESTC_ERR_FORMAT},
        {"attribute without SET", {0x30, 0x05, 0x30, 0x03, 0x06, 0x01, 0x2a}, 7, ESTC_ERR_FORMAT},
        {"attribute, extra element",
         {0x30, 0x0c, 0x30, 0x0a, 0x06, 0x01, 0x2a, 0x31, 0x02, 0x05, 0x00, 0x05, 0x00, 0x00},
         14,
         ESTC_ERR_FORMAT},
        {"empty OID", {0x30, 0x02, 0x06, 0x00}, 4, ESTC_ERR_FORMAT},
        {"unfinished OID", {0x30, 0x03, 0x06, 0x01, 0x81}, 5, ESTC_ERR_FORMAT},
        {"trailing byte", {0x30, 0x00, 0x00}, 3, ESTC_ERR_FORMAT},
        {"huge length", {0x30, 0x84, 0x7f, 0xff, 0xff, 0xff}, 6, ESTC_ERR_FORMAT},
        {"indefinite", {0x30, 0x80, 0x00, 0x00}, 4, ESTC_ERR_FORMAT},
        {"value BER inside",
         {0x30, 0x09, 0x30, 0x07, 0x06, 0x01, 0x2a, 0x31, 0x02, 0x30, 0x80},
         11,
         ESTC_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t *copy = malloc(bad[i].len);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, bad[i].bytes, bad[i].len);
        estc_err err = estc__codec_csrattrs(copy, bad[i].len, &attrs);
        ck_assert_msg(err == bad[i].want, "%s: got %s", bad[i].what, estc_err_name(err));
        ck_assert_uint_eq(attrs.n, 0);
        ck_assert_ptr_null(attrs.items);
        free(copy);
    }
    ck_assert_int_eq(estc__codec_csrattrs(empty_seq, ESTC__MAX_CSRATTRS_SIZE + 1, &attrs),
                     ESTC_ERR_LIMIT);
    ck_assert_int_eq(estc__codec_csrattrs(NULL, 2, &attrs), ESTC_ERR_INVALID_ARG);

    /* More items than the cap. */
    size_t n = ESTC__MAX_CSRATTRS + 1;
    uint8_t *many = malloc(3 + 3 * n);
    ck_assert_ptr_nonnull(many);
    many[0] = 0x30;
    many[1] = 0x81;
    many[2] = (uint8_t)(3 * n);
    for (size_t i = 0; i < n; i++) {
        many[3 + 3 * i] = 0x06;
        many[4 + 3 * i] = 0x01;
        many[5 + 3 * i] = 0x2a;
    }
    ck_assert_int_eq(estc__codec_csrattrs(many, 3 + 3 * n, &attrs), ESTC_ERR_LIMIT);
    ck_assert_uint_eq(attrs.n, 0);
    ck_assert_int_eq(estc__codec_csrattrs(many, 3 + 3 * (n - 1), &attrs), ESTC_ERR_FORMAT);
    many[2] = (uint8_t)(3 * (n - 1));
    ck_assert_int_eq(estc__codec_csrattrs(many, 3 + 3 * (n - 1), &attrs), ESTC_OK);
    ck_assert_uint_eq(attrs.n, ESTC__MAX_CSRATTRS);
    estc__csrattrs_free(&attrs);
    free(many);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Link-format                                                               */
/* ------------------------------------------------------------------------ */

static estc_err links(const char *text, estc__discovery *d)
{
    /* An exact-size copy without a terminating NUL, so overreads show. */
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, text, len);
    estc_err err = estc__codec_link_format(copy, len, d);
    free(copy);
    return err;
}

START_TEST(links_rfc_vectors)
{
    size_t len;
    uint8_t *in = load("discovery.txt", &len);
    while (len > 0 && (in[len - 1] == '\n' || in[len - 1] == '\r'))
        len--;
    estc__discovery d;
    ck_assert_int_eq(estc__codec_link_format((const char *)in, len, &d), ESTC_OK);
    for (int r = 0; r < ESTC__EST_COUNT; r++) {
        ck_assert_msg(d.res[r].found, "%s not found", estc__est_resource_name(r));
        ck_assert_ptr_null(d.res[r].host);
        char want[32];
        snprintf(want, sizeof(want), "/est/%s", estc__est_resource_name(r));
        ck_assert_str_eq(d.res[r].path, want);
    }
    ck_assert_uint_eq(d.res[ESTC__EST_CRTS].n_ct, 2);
    ck_assert_int_eq(d.res[ESTC__EST_CRTS].ct[0], 281);
    ck_assert_int_eq(d.res[ESTC__EST_CRTS].ct[1], 287);
    ck_assert_uint_eq(d.res[ESTC__EST_ATT].n_ct, 1);
    ck_assert_int_eq(d.res[ESTC__EST_ATT].ct[0], 285);
    ck_assert_int_eq(d.res[ESTC__EST_SKG].ct[0], 62);
    estc__discovery_free(&d);
    ck_assert(!d.res[0].found);
    free(in);

    in = load("discovery-port-61617.txt", &len);
    ck_assert_int_eq(estc__codec_link_format((const char *)in, len, &d), ESTC_OK);
    for (int r = 0; r < ESTC__EST_COUNT; r++) {
        ck_assert(d.res[r].found);
        ck_assert_str_eq(d.res[r].host, "2001:db8:3::123");
        ck_assert_uint_eq(d.res[r].port, 61617);
    }
    ck_assert_str_eq(d.res[ESTC__EST_SREN].path, "/est/sren");
    ck_assert_uint_eq(d.res[ESTC__EST_SEN].n_ct, 2);
    estc__discovery_free(&d);

    /* Every prefix parses or fails cleanly. */
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = malloc(cut + 1);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, in, cut);
        estc_err err = estc__codec_link_format(copy, cut, &d);
        ck_assert(err == ESTC_OK || err == ESTC_ERR_FORMAT);
        estc__discovery_free(&d);
        free(copy);
    }
    free(in);
}
END_TEST

START_TEST(links_forms)
{
    estc__discovery d;
    /* Relative path, root, whitespace between links, quoted rt list, other
     * links, uppercase parameter names and a ct without quotes. */
    ck_assert_int_eq(links("</sensors>;rt=\"temp\";ct=0,\r\n <est/crts>;RT=\"x ace.est.crts\";"
                           "ct=281, <coaps://est.example:5685/root/sen?x=1>;rt=ace.est.sen;ct="
                           "\"287 281\",<coaps://10.0.0.1>;rt=ace.est.sren,"
                           "<coap://plain/att>;rt=ace.est.att,</att2>;rt=ace.est.att;obs;ct=285",
                           &d),
                     ESTC_OK);
    ck_assert_str_eq(d.res[ESTC__EST_CRTS].path, "/.well-known/est/crts");
    ck_assert_int_eq(d.res[ESTC__EST_CRTS].ct[0], 281);
    ck_assert_str_eq(d.res[ESTC__EST_SEN].host, "est.example");
    ck_assert_uint_eq(d.res[ESTC__EST_SEN].port, 5685);
    ck_assert_str_eq(d.res[ESTC__EST_SEN].path, "/root/sen?x=1");
    ck_assert_int_eq(d.res[ESTC__EST_SEN].ct[0], 287);
    ck_assert_str_eq(d.res[ESTC__EST_SREN].host, "10.0.0.1");
    ck_assert_uint_eq(d.res[ESTC__EST_SREN].port, 5684);
    ck_assert_str_eq(d.res[ESTC__EST_SREN].path, "/");
    /* coap:// is not used; the later coaps-less relative one is. */
    ck_assert(d.res[ESTC__EST_ATT].found);
    ck_assert_ptr_null(d.res[ESTC__EST_ATT].host);
    ck_assert_str_eq(d.res[ESTC__EST_ATT].path, "/att2");
    ck_assert(!d.res[ESTC__EST_SKG].found);
    estc__discovery_free(&d);

    /* Empty document; first link wins; dot segments and user info ignored. */
    ck_assert_int_eq(links("", &d), ESTC_OK);
    ck_assert(!d.res[ESTC__EST_CRTS].found);
    ck_assert_int_eq(links("</a>;rt=ace.est.crts,</b>;rt=ace.est.crts", &d), ESTC_OK);
    ck_assert_str_eq(d.res[ESTC__EST_CRTS].path, "/a");
    estc__discovery_free(&d);
    ck_assert_int_eq(links("</a/../b>;rt=ace.est.crts,<coaps://u@h/x>;rt=ace.est.sen", &d),
                     ESTC_OK);
    ck_assert(!d.res[ESTC__EST_CRTS].found);
    ck_assert(!d.res[ESTC__EST_SEN].found);
    estc__discovery_free(&d);
    /* "ace.est" prefix alone or another suffix is not an EST resource. */
    ck_assert_int_eq(links("</a>;rt=ace.est,</b>;rt=ace.est.crtsx,</c>;rt=\"ace.est.\"", &d),
                     ESTC_OK);
    for (int r = 0; r < ESTC__EST_COUNT; r++)
        ck_assert(!d.res[r].found);
    estc__discovery_free(&d);

    static const char *const bad[] = {
        "/est/crts;rt=ace.est.crts",                    /* no angle brackets */
        "</est/crts",                                   /* unclosed */
        "</est/crts>;rt=\"ace.est.crts",                /* unclosed quote */
        "</est/crts>;=x",                               /* empty parameter name */
        "</est/crts>;rt=",                              /* empty token */
        "</est/crts>,",                                 /* dangling comma */
        "</est/crts> </est/sen>",                       /* missing comma */
        "</est crts>;rt=ace.est.crts",                  /* space in URI */
        "</est/crts>;rt=ace.est.crts;ct=281 287",       /* unquoted list */
        "</est/crts>;rt=ace.est.crts;ct=\"28a\"",       /* not a number */
        "</est/crts>;rt=ace.est.crts;ct=70000",         /* out of range */
        "</est/crts>;rt=ace.est.crts;ct=0281",          /* leading zero */
        "<coaps://[::1>;rt=ace.est.crts",               /* unclosed bracket */
        "<coaps://h:0/x>;rt=ace.est.crts",              /* port 0 */
        "<coaps://h:99999/x>;rt=ace.est.crts",          /* port too big */
        "<coaps://h:12a/x>;rt=ace.est.crts",            /* port not a number */
        "<coaps://:5684/x>;rt=ace.est.crts",            /* empty host */
        "<coaps://[fe80::1%25eth0]/x>;rt=ace.est.crts", /* zone id */
        "</a>;rt=\"x\x01\"",                            /* control byte */
        "</a>;rt=\"x\\",                                /* escape at the end */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        estc_err err = links(bad[i], &d);
        ck_assert_msg(err == ESTC_ERR_FORMAT, "'%s' gave %s", bad[i], estc_err_name(err));
        for (int r = 0; r < ESTC__EST_COUNT; r++)
            ck_assert(!d.res[r].found && d.res[r].path == NULL);
    }
    /* A NUL byte inside. */
    static const char nul[] = "</a>;rt=ace.est.crts\0,</b>";
    ck_assert_int_eq(estc__codec_link_format(nul, sizeof(nul) - 1, &d), ESTC_ERR_FORMAT);
    ck_assert_int_eq(estc__codec_link_format(nul, ESTC__MAX_LINK_FORMAT_SIZE + 1, &d),
                     ESTC_ERR_LIMIT);
    ck_assert_int_eq(estc__codec_link_format(NULL, 1, &d), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__codec_link_format(nul, 1, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_ptr_null(estc__est_resource_name(ESTC__EST_COUNT));
}
END_TEST

static Suite *codec_suite(void)
{
    TCase *tc;
    Suite *s = check_suite("codec", "codec", NULL, NULL, 60, &tc);
    tcase_add_test(tc, cf_table);
    tcase_add_test(tc, der_reader_strict);
    tcase_add_test(tc, certs_rfc_vectors);
    tcase_add_test(tc, certs_truncated);
    tcase_add_test(tc, certs_mutated);
    tcase_add_test(tc, certs_hostile_forms);
    tcase_add_test(tc, certs_signed_or_with_content);
    tcase_add_test(tc, multipart_rfc_vectors);
    tcase_add_test(tc, multipart_null_and_empty);
    tcase_add_test(tc, multipart_hostile);
    tcase_add_test(tc, csrattrs_rfc_vector);
    tcase_add_test(tc, csrattrs_forms);
    tcase_add_test(tc, links_rfc_vectors);
    tcase_add_test(tc, links_forms);
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s VECTOR_DIR\n", argv[0]);
        return 2;
    }
    vector_dir = argv[1];
    return check_run(codec_suite());
}
