/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checks of the tpm2: driver against a running TPM (swtpm started by
 * tests/tpm2/run.sh; the TCTI comes from TPM2TOOLS_TCTI). They add to the
 * conformance suite what is TPM-specific: signatures of every scheme verified
 * with OpenSSL, PKCS#8 import, NV chunking and size limits, derived address
 * ranges and collisions, the rules a key file is read under, and the error
 * of each bad input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <estc/engine.h>

/* Objects of these tests live in their own ranges, away from the
 * conformance suite's default ones. */
#define PREFIX "tpm2:handle-range=0x81000200-0x810002ff;nv-range=0x01500200-0x015003ff"
#define KEY_A "tpm2:handle=0x81000210"
#define KEY_B "tpm2:handle=0x81000211"
#define NV_A "tpm2:nv=0x01500210"

static estc_ctx *ctx;

static void setup(void)
{
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
}

static void teardown(void)
{
    estc_ctx_free(ctx);
    ctx = NULL;
}

static bool count_one(void *arg, const char *addr, estc_obj_kind kind)
{
    (void)addr;
    (void)kind;
    (*(size_t *)arg)++;
    return true;
}

static size_t count(const char *prefix, estc_obj_kind kind)
{
    size_t n = 0;
    ck_assert_int_eq(estc_object_list(ctx, prefix, kind, count_one, &n), ESTC_OK);
    return n;
}

static EVP_PKEY *spki_key(const char *addr)
{
    estc_buf spki = {0};
    ck_assert_int_eq(estc_key_public(ctx, addr, &spki), ESTC_OK);
    const uint8_t *p = spki.data;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)spki.len);
    ck_assert_ptr_nonnull(pk);
    ck_assert(p == spki.data + spki.len);
    estc_buf_free(&spki);
    return pk;
}

/* Signs a random digest through the engine and verifies it with OpenSSL. */
static void sign_verify(const char *addr, estc_sig_alg alg, estc_hash hash)
{
    const EVP_MD *md = hash == ESTC_HASH_SHA256   ? EVP_sha256()
                       : hash == ESTC_HASH_SHA384 ? EVP_sha384()
                                                  : EVP_sha512();
    uint8_t digest[64];
    size_t dlen = (size_t)EVP_MD_get_size(md);
    ck_assert_int_eq(RAND_bytes(digest, (int)dlen), 1);
    estc_buf sig = {0};
    estc_err err = estc_key_sign(ctx, addr, alg, hash, digest, dlen, &sig);
    ck_assert_msg(err == ESTC_OK, "sign: %s: %s", estc_err_name(err), estc_ctx_error_detail(ctx));

    EVP_PKEY *pk = spki_key(addr);
    EVP_PKEY_CTX *vc = EVP_PKEY_CTX_new(pk, NULL);
    ck_assert_ptr_nonnull(vc);
    ck_assert_int_eq(EVP_PKEY_verify_init(vc), 1);
    ck_assert_int_eq(EVP_PKEY_CTX_set_signature_md(vc, md), 1);
    if (alg == ESTC_SIG_RSA_PSS) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(vc, RSA_PKCS1_PSS_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(vc, RSA_PSS_SALTLEN_DIGEST), 1);
    } else if (alg == ESTC_SIG_RSA_PKCS1) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(vc, RSA_PKCS1_PADDING), 1);
    }
    ck_assert_int_eq(EVP_PKEY_verify(vc, sig.data, sig.len, digest, dlen), 1);
    /* A changed digest must not verify: the check can fail. */
    digest[0] ^= 1;
    ck_assert_int_ne(EVP_PKEY_verify(vc, sig.data, sig.len, digest, dlen), 1);
    EVP_PKEY_CTX_free(vc);
    EVP_PKEY_free(pk);
    estc_buf_free(&sig);
}

static void expect(estc_err got, estc_err want, const char *what)
{
    ck_assert_msg(got == want, "%s: got %s, want %s (%s)", what, estc_err_name(got),
                  estc_err_name(want), estc_ctx_error_detail(ctx));
}

START_TEST(ec_p256_sign_verify)
{
    expect(estc_key_generate(ctx, KEY_A, ESTC_KEY_EC_P256), ESTC_OK, "keygen");
    sign_verify(KEY_A, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    sign_verify(KEY_A, ESTC_SIG_ECDSA, ESTC_HASH_SHA384);
    /* An RSA scheme on an EC key is refused. */
    uint8_t d[32] = {0};
    estc_buf sig = {0};
    expect(estc_key_sign(ctx, KEY_A, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA256, d, 32, &sig),
           ESTC_ERR_UNSUPPORTED, "pss on ec");
    /* Generating again at the same handle fails and keeps the key. */
    EVP_PKEY *before = spki_key(KEY_A);
    expect(estc_key_generate(ctx, KEY_A, ESTC_KEY_EC_P256), ESTC_ERR_EXISTS, "keygen twice");
    EVP_PKEY *after = spki_key(KEY_A);
    ck_assert_int_eq(EVP_PKEY_eq(before, after), 1);
    EVP_PKEY_free(before);
    EVP_PKEY_free(after);
    expect(estc_key_remove(ctx, KEY_A), ESTC_OK, "remove");
    expect(estc_key_remove(ctx, KEY_A), ESTC_ERR_NOT_FOUND, "remove twice");
    expect(estc_key_sign(ctx, KEY_A, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, d, 32, &sig),
           ESTC_ERR_NOT_FOUND, "sign removed");
    ck_assert_ptr_null(sig.data);
}
END_TEST

START_TEST(ec_p384_sign_verify)
{
    expect(estc_key_generate(ctx, KEY_A, ESTC_KEY_EC_P384), ESTC_OK, "keygen");
    EVP_PKEY *pk = spki_key(KEY_A);
    ck_assert_int_eq(EVP_PKEY_get_bits(pk), 384);
    EVP_PKEY_free(pk);
    sign_verify(KEY_A, ESTC_SIG_ECDSA, ESTC_HASH_SHA384);
    sign_verify(KEY_A, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    expect(estc_key_remove(ctx, KEY_A), ESTC_OK, "remove");
}
END_TEST

START_TEST(replaced_key)
{
    /* Open handles are cached: a key replaced at the same handle must be
     * used as it is now. */
    expect(estc_key_generate(ctx, KEY_A, ESTC_KEY_EC_P256), ESTC_OK, "keygen p256");
    sign_verify(KEY_A, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    expect(estc_key_remove(ctx, KEY_A), ESTC_OK, "remove");
    expect(estc_key_generate(ctx, KEY_A, ESTC_KEY_EC_P384), ESTC_OK, "keygen p384");
    sign_verify(KEY_A, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    EVP_PKEY *pk = spki_key(KEY_A);
    ck_assert_int_eq(EVP_PKEY_get_bits(pk), 384);
    EVP_PKEY_free(pk);
    expect(estc_key_remove(ctx, KEY_A), ESTC_OK, "remove");
}
END_TEST

START_TEST(rsa2048_sign_verify)
{
    expect(estc_key_generate(ctx, KEY_A, ESTC_KEY_RSA_2048), ESTC_OK, "keygen");
    EVP_PKEY *pk = spki_key(KEY_A);
    ck_assert_int_eq(EVP_PKEY_get_bits(pk), 2048);
    EVP_PKEY_free(pk);
    sign_verify(KEY_A, ESTC_SIG_RSA_PKCS1, ESTC_HASH_SHA256);
    sign_verify(KEY_A, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA256);
    sign_verify(KEY_A, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA384);
    uint8_t d[32] = {0};
    estc_buf sig = {0};
    expect(estc_key_sign(ctx, KEY_A, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, d, 32, &sig),
           ESTC_ERR_UNSUPPORTED, "ecdsa on rsa");
    expect(estc_key_remove(ctx, KEY_A), ESTC_OK, "remove");
}
END_TEST

static uint8_t *pkcs8_of(EVP_PKEY *pk, size_t *len)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pk);
    ck_assert_ptr_nonnull(p8);
    uint8_t *der = NULL;
    int n = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    ck_assert_int_gt(n, 0);
    PKCS8_PRIV_KEY_INFO_free(p8);
    *len = (size_t)n;
    return der;
}

static void import_check(EVP_PKEY *orig, estc_sig_alg alg)
{
    size_t len = 0;
    uint8_t *der = pkcs8_of(orig, &len);
    expect(estc_key_import(ctx, KEY_B, der, len), ESTC_OK, "import");
    expect(estc_key_import(ctx, KEY_B, der, len), ESTC_ERR_EXISTS, "import twice");
    EVP_PKEY *pub = spki_key(KEY_B);
    ck_assert_int_eq(EVP_PKEY_eq(orig, pub), 1);
    EVP_PKEY_free(pub);
    sign_verify(KEY_B, alg, ESTC_HASH_SHA256);
    expect(estc_key_remove(ctx, KEY_B), ESTC_OK, "remove");
    OPENSSL_clear_free(der, len);
}

START_TEST(import_pkcs8)
{
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(ec);
    import_check(ec, ESTC_SIG_ECDSA);
    EVP_PKEY_free(ec);
    EVP_PKEY *ec384 = EVP_EC_gen("P-384");
    import_check(ec384, ESTC_SIG_ECDSA);
    EVP_PKEY_free(ec384);
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    ck_assert_ptr_nonnull(rsa);
    import_check(rsa, ESTC_SIG_RSA_PSS);
    EVP_PKEY_free(rsa);

    /* Garbage and unsupported curves leave nothing behind. */
    size_t keys = count(PREFIX, ESTC_OBJ_KEY);
    uint8_t junk[40] = {0x30, 0x26, 0x02, 0x01};
    expect(estc_key_import(ctx, KEY_B, junk, sizeof(junk)), ESTC_ERR_FORMAT, "junk");
    EVP_PKEY *k1 = EVP_EC_gen("secp256k1");
    size_t len = 0;
    uint8_t *der = pkcs8_of(k1, &len);
    expect(estc_key_import(ctx, KEY_B, der, len), ESTC_ERR_UNSUPPORTED, "secp256k1");
    OPENSSL_clear_free(der, len);
    EVP_PKEY_free(k1);
    ck_assert_uint_eq(count(PREFIX, ESTC_OBJ_KEY), keys);
}
END_TEST

/* A self-signed certificate padded with SAN entries to about @size bytes. */
static uint8_t *make_cert(size_t size, size_t *len)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"tpm2 test", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    if (size > 600) {
        size_t n = (size - 500) / 40;
        char *san = calloc(n, 48);
        ck_assert_ptr_nonnull(san);
        for (size_t i = 0; i < n; i++)
            sprintf(san + strlen(san), "%sDNS:host%04zu.example.invalid.padding", i ? "," : "", i);
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
        ck_assert_ptr_nonnull(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        free(san);
    }
    ck_assert_int_gt(X509_sign(x, pk, EVP_sha256()), 0);
    uint8_t *der = NULL;
    int n = i2d_X509(x, &der);
    ck_assert_int_gt(n, 0);
    X509_free(x);
    EVP_PKEY_free(pk);
    *len = (size_t)n;
    return der;
}

START_TEST(nv_chunks_and_limits)
{
    /* Larger than swtpm's NV buffer (1024): written and read in chunks. */
    size_t len = 0;
    uint8_t *der = make_cert(1800, &len);
    ck_assert_uint_gt(len, 1024);
    ck_assert_uint_le(len, 2048);
    expect(estc_cert_store(ctx, NV_A, der, len), ESTC_OK, "store");
    expect(estc_cert_store(ctx, NV_A, der, len), ESTC_ERR_EXISTS, "store twice");
    estc_buf back = {0};
    expect(estc_cert_load(ctx, NV_A, &back), ESTC_OK, "load");
    ck_assert_uint_eq(back.len, len);
    ck_assert_mem_eq(back.data, der, len);
    estc_buf_free(&back);
    bool found = false;
    expect(estc_object_exists(ctx, NV_A, ESTC_OBJ_CERT, &found), ESTC_OK, "exists");
    ck_assert(found);
    expect(estc_object_exists(ctx, NV_A, ESTC_OBJ_KEY, &found), ESTC_OK, "exists as key");
    ck_assert(!found);
    expect(estc_cert_remove(ctx, NV_A), ESTC_OK, "remove");
    expect(estc_cert_remove(ctx, NV_A), ESTC_ERR_NOT_FOUND, "remove twice");
    expect(estc_cert_load(ctx, NV_A, &back), ESTC_ERR_NOT_FOUND, "load removed");
    OPENSSL_free(der);

    /* Larger than an NV index can be: a clear error, nothing defined. */
    der = make_cert(3000, &len);
    ck_assert_uint_gt(len, 2048);
    size_t certs = count(PREFIX, ESTC_OBJ_CERT);
    expect(estc_cert_store(ctx, NV_A, der, len), ESTC_ERR_LIMIT, "too large");
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "NV index size"));
    expect(estc_object_exists(ctx, NV_A, ESTC_OBJ_CERT, &found), ESTC_OK, "exists");
    ck_assert(!found);
    ck_assert_uint_eq(count(PREFIX, ESTC_OBJ_CERT), certs);
    OPENSSL_free(der);
}
END_TEST

static bool collect(void *arg, const char *addr, estc_obj_kind kind)
{
    (void)kind;
    char *buf = arg;
    strcat(buf, addr);
    strcat(buf, "\n");
    return true;
}

START_TEST(derive_and_list)
{
    char *k1 = NULL, *k1b = NULL, *c1 = NULL, *t1 = NULL, *t2 = NULL;
    expect(estc_address_derive(ctx, PREFIX, ESTC_OBJ_KEY, "k1", &k1), ESTC_OK, "derive");
    expect(estc_address_derive(ctx, PREFIX, ESTC_OBJ_KEY, "k1", &k1b), ESTC_OK, "derive");
    ck_assert_str_eq(k1, k1b);
    ck_assert_int_eq(strncmp(k1, "tpm2:handle=0x810002", 20), 0);
    expect(estc_address_derive(ctx, PREFIX, ESTC_OBJ_CERT, "c1", &c1), ESTC_OK, "derive");
    expect(estc_address_derive(ctx, PREFIX, ESTC_OBJ_TRUST, "t1", &t1), ESTC_OK, "derive");
    expect(estc_address_derive(ctx, PREFIX, ESTC_OBJ_TRUST, "t2", &t2), ESTC_OK, "derive");
    /* certificates in the low half of nv-range, trust in the high half */
    ck_assert_int_eq(strncmp(c1, "tpm2:nv=0x015002", 16), 0);
    ck_assert_int_eq(strncmp(t1, "tpm2:nv=0x015003", 16), 0);

    size_t len = 0;
    uint8_t *der = make_cert(0, &len);
    expect(estc_key_generate(ctx, k1, ESTC_KEY_EC_P256), ESTC_OK, "keygen");
    expect(estc_cert_store(ctx, c1, der, len), ESTC_OK, "cert");
    expect(estc_trust_store(ctx, t1, der, len), ESTC_OK, "trust 1");
    expect(estc_trust_store(ctx, t2, der, len), ESTC_OK, "trust 2");

    char got[1024] = "", want[1024] = "";
    expect(estc_trust_list(ctx, PREFIX, collect, got), ESTC_OK, "list trust");
    /* listed in handle order */
    snprintf(want, sizeof(want), "%s\n%s\n", strcmp(t1, t2) < 0 ? t1 : t2,
             strcmp(t1, t2) < 0 ? t2 : t1);
    ck_assert_str_eq(got, want);
    got[0] = '\0';
    expect(estc_object_list(ctx, PREFIX, ESTC_OBJ_CERT, collect, got), ESTC_OK, "list certs");
    snprintf(want, sizeof(want), "%s\n", c1);
    ck_assert_str_eq(got, want);
    got[0] = '\0';
    expect(estc_object_list(ctx, PREFIX, ESTC_OBJ_KEY, collect, got), ESTC_OK, "list keys");
    snprintf(want, sizeof(want), "%s\n", k1);
    ck_assert_str_eq(got, want);

    /* The query of the prefix is carried into derived addresses. */
    char *q = NULL;
    const char *tcti = getenv("TPM2TOOLS_TCTI");
    ck_assert_ptr_nonnull(tcti);
    char qprefix[512];
    snprintf(qprefix, sizeof(qprefix), "%s?tcti=%s", PREFIX, tcti);
    expect(estc_address_derive(ctx, qprefix, ESTC_OBJ_KEY, "k1", &q), ESTC_OK, "derive q");
    ck_assert_int_eq(strncmp(q, k1, strlen(k1)), 0);
    ck_assert_str_eq(q + strlen(k1), strchr(qprefix, '?'));
    free(q);
    /* Empty attributes are skipped, as in every attribute address. */
    expect(estc_address_derive(ctx, PREFIX ";", ESTC_OBJ_KEY, "k1", &q), ESTC_OK, "derive ;");
    ck_assert_str_eq(q, k1);
    free(q);

    expect(estc_key_remove(ctx, k1), ESTC_OK, "rm key");
    expect(estc_cert_remove(ctx, c1), ESTC_OK, "rm cert");
    expect(estc_trust_remove(ctx, t1), ESTC_OK, "rm trust");
    expect(estc_trust_remove(ctx, t2), ESTC_OK, "rm trust");
    ck_assert_uint_eq(count(PREFIX, ESTC_OBJ_TRUST), 0);
    OPENSSL_free(der);
    free(k1);
    free(k1b);
    free(c1);
    free(t1);
    free(t2);
}
END_TEST

START_TEST(collision_is_exists)
{
    /* A one-handle range: every name lands on the same handle. */
    const char *p = "tpm2:handle-range=0x81000280-0x81000280";
    char *a = NULL, *b = NULL;
    expect(estc_address_derive(ctx, p, ESTC_OBJ_KEY, "first", &a), ESTC_OK, "derive");
    expect(estc_address_derive(ctx, p, ESTC_OBJ_KEY, "second", &b), ESTC_OK, "derive");
    ck_assert_str_eq(a, b);
    expect(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_OK, "keygen");
    expect(estc_key_generate(ctx, b, ESTC_KEY_EC_P256), ESTC_ERR_EXISTS, "collision");
    expect(estc_key_remove(ctx, a), ESTC_OK, "remove");
    free(a);
    free(b);
}
END_TEST

START_TEST(bad_addresses)
{
    static const char *const bad[] = {
        "tpm2:",                                                     /* no handle */
        "tpm2:handle=",                                              /* empty value */
        "tpm2:handle=zzz",                                           /* not a number */
        "tpm2:handle=0x12",                                          /* not persistent */
        "tpm2:handle=0x81800000",                                    /* platform range */
        "tpm2:handle=0x81000010x",                                   /* trailing junk */
        "tpm2:handle=0x1810000100",                                  /* too large */
        "tpm2:nv=0x01500010",                                        /* NV for a key */
        "tpm2:handle=0x81000010;nv=0x01500010",                      /* both */
        "tpm2:handle=0x81000010;handle=0x81000011",                  /* twice */
        "tpm2:object=foo",                                           /* unknown attribute */
        "tpm2:handle=0x81000010?tcti=",                              /* empty TCTI */
        "tpm2:handle=0x81000010?srk=0x1",                            /* bad SRK */
        "tpm2:handle=0x81000010?pin-value=1",                        /* unknown query */
        "tpm2:handle=0x81000010?tcti=swtpm%zz",                      /* bad percent-encoding */
        "tpm2:handle=0x81000010;handle-range=0x81000000-0x81000001", /* object + range */
        "tpm2:key-file=",                                            /* empty path */
        "tpm2:key-file=/k.pem;handle=0x81000010",                    /* file + handle */
        "tpm2:key-file=/k.pem;key-dir=/d",                           /* file + key-dir */
        "tpm2:key-dir=/d",                                           /* a prefix */
        "tpm2:handle=0x81000010?key-file=/k.pem",                    /* misplaced */
        "tpm2:handle=0x81000010?owner-auth-source=",                 /* empty source */
        "tpm2:handle=0x81000010?parent-auth-source=",                /* empty source */
        "tpm2:handle=0x81000010;owner-auth-source=/p",               /* misplaced */
    };
    uint8_t d[32] = {0};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        estc_buf out = {0};
        expect(estc_key_generate(ctx, bad[i], ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS, bad[i]);
        expect(estc_key_sign(ctx, bad[i], ESTC_SIG_ECDSA, ESTC_HASH_SHA256, d, 32, &out),
               ESTC_ERR_BAD_ADDRESS, bad[i]);
        ck_assert_ptr_null(out.data);
    }
    estc_buf out = {0};
    expect(estc_cert_load(ctx, "tpm2:handle=0x81000010", &out), ESTC_ERR_BAD_ADDRESS, "key as nv");
    expect(estc_cert_load(ctx, "tpm2:nv=0x81000010", &out), ESTC_ERR_BAD_ADDRESS, "nv range");
    char *a = NULL;
    expect(estc_address_derive(ctx, "tpm2:handle=0x81000010", ESTC_OBJ_KEY, "x", &a),
           ESTC_ERR_BAD_ADDRESS, "object as prefix");
    expect(
        estc_address_derive(ctx, "tpm2:handle-range=0x81000002-0x81000001", ESTC_OBJ_KEY, "x", &a),
        ESTC_ERR_BAD_ADDRESS, "reversed range");
    expect(estc_address_derive(ctx, "tpm2:nv-range=0x01500000-0x01500000", ESTC_OBJ_KEY, "x", &a),
           ESTC_ERR_BAD_ADDRESS, "one-index nv range");
    ck_assert_ptr_null(a);
    /* A key name under key-dir= is one file name (the library already
     * allows no other). */
    static const char *const bad_names[] = {"a/b", "..", ".hidden", ""};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        expect(estc_address_derive(ctx, "tpm2:key-dir=/d", ESTC_OBJ_KEY, bad_names[i], &a),
               ESTC_ERR_INVALID_ARG, bad_names[i]);
        ck_assert_ptr_null(a);
    }
}
END_TEST

/* A key-dir= prefix derives key files, percent-encoded, with the prefix's
 * query; certificates still go to NV indices. */
START_TEST(derive_key_files)
{
    char *a = NULL;
    expect(estc_address_derive(ctx, "tpm2:key-dir=/var/lib/my%20keys?tcti=mssim", ESTC_OBJ_KEY,
                               "dev_1", &a),
           ESTC_OK, "derive key");
    ck_assert_str_eq(a, "tpm2:key-file=/var/lib/my%20keys/dev_1.pem?tcti=mssim");
    free(a);
    a = NULL;
    expect(estc_address_derive(ctx, "tpm2:key-dir=/k/;t%3B?a=%3D", ESTC_OBJ_KEY, "x", &a),
           ESTC_ERR_BAD_ADDRESS, "unknown attribute");
    expect(estc_address_derive(ctx, "tpm2:key-dir=/k%3Bx/", ESTC_OBJ_KEY, "x", &a), ESTC_OK,
           "slash");
    ck_assert_str_eq(a, "tpm2:key-file=/k%3Bx/x.pem");
    free(a);
    a = NULL;
    expect(estc_address_derive(ctx, "tpm2:key-dir=/k", ESTC_OBJ_CERT, "x", &a), ESTC_OK, "cert");
    ck_assert(strncmp(a, "tpm2:nv=0x018", 13) == 0);
    free(a);
}
END_TEST

/* A key file is read under the rule for files others may read but not
 * change: the TPM-wrapped blob is no secret (0644 works), but a file
 * writable by group or others, a symbolic link or a FIFO is refused (the
 * FIFO without waiting for a writer: the alarm fails a read that blocks),
 * and the key stays usable once the file is put right. */
START_TEST(key_file_rules)
{
    alarm(60);
    char dir[] = "/tmp/estc-tpm2-kf.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[128], link[128], fifo[128], a[256], al[256], af[256];
    snprintf(path, sizeof(path), "%s/k.pem", dir);
    snprintf(link, sizeof(link), "%s/link.pem", dir);
    snprintf(fifo, sizeof(fifo), "%s/fifo.pem", dir);
    snprintf(a, sizeof(a), "tpm2:key-file=%s", path);
    snprintf(al, sizeof(al), "tpm2:key-file=%s", link);
    snprintf(af, sizeof(af), "tpm2:key-file=%s", fifo);
    expect(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_OK, "keygen");
    ck_assert_int_eq(chmod(path, 0644), 0);
    sign_verify(a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);

    uint8_t d[32] = {0};
    estc_buf out = {0};
    static const struct {
        int mode;
        const char *rule;
    } bad[] = {{0664, "writable by group or others (mode 0664)"},
               {0646, "writable by group or others (mode 0646)"},
               {0620, "writable by group or others (mode 0620)"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(chmod(path, (mode_t)bad[i].mode), 0);
        expect(estc_key_sign(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, d, 32, &out), ESTC_ERR_AUTH,
               bad[i].rule);
        ck_assert_msg(strstr(estc_ctx_error_detail(ctx), bad[i].rule) != NULL, "%s",
                      estc_ctx_error_detail(ctx));
        expect(estc_key_public(ctx, a, &out), ESTC_ERR_AUTH, bad[i].rule);
    }
    ck_assert_int_eq(chmod(path, 0600), 0);
    ck_assert_int_eq(symlink(path, link), 0);
    expect(estc_key_sign(ctx, al, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, d, 32, &out), ESTC_ERR_AUTH,
           "symbolic link");
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), "is a symbolic link") != NULL, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    expect(estc_key_public(ctx, af, &out), ESTC_ERR_FORMAT, "FIFO");
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), "not a regular file (a FIFO)") != NULL, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_ptr_null(out.data);

    sign_verify(a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    expect(estc_key_remove(ctx, a), ESTC_OK, "remove");
    unlink(link);
    unlink(fifo);
    ck_assert_int_eq(rmdir(dir), 0);
    alarm(0);
}
END_TEST

START_TEST(missing_objects)
{
    uint8_t d[32] = {0};
    estc_buf out = {0};
    const char *k = "tpm2:handle=0x810002fe";
    expect(estc_key_public(ctx, k, &out), ESTC_ERR_NOT_FOUND, "public");
    expect(estc_key_sign(ctx, k, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, d, 32, &out), ESTC_ERR_NOT_FOUND,
           "sign");
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "0x810002fe"));
    expect(estc_key_remove(ctx, k), ESTC_ERR_NOT_FOUND, "remove");
    expect(estc_cert_load(ctx, "tpm2:nv=0x015003fe", &out), ESTC_ERR_NOT_FOUND, "load");
    expect(estc_cert_remove(ctx, "tpm2:nv=0x015003fe"), ESTC_ERR_NOT_FOUND, "cert remove");
    bool found = true;
    expect(estc_object_exists(ctx, k, ESTC_OBJ_KEY, &found), ESTC_OK, "exists");
    ck_assert(!found);
    ck_assert_ptr_null(out.data);
    /* The storage primary key is not a signing key: never removed here. */
    expect(estc_key_generate(ctx, "tpm2:handle=0x810002fd", ESTC_KEY_EC_P256), ESTC_OK, "srk");
    expect(estc_key_remove(ctx, "tpm2:handle=0x81000001"), ESTC_ERR_UNSUPPORTED, "remove srk");
    expect(estc_key_remove(ctx, "tpm2:handle=0x810002fd"), ESTC_OK, "remove");
}
END_TEST

START_TEST(wrong_tcti)
{
    static const char *const bad[] = {
        /* nothing listens on port 1 */
        "tpm2:handle=0x81000010?tcti=swtpm:host%3D127.0.0.1,port%3D1",
        /* no such TCTI library */
        "tpm2:handle=0x81000010?tcti=no-such-tcti:x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        estc_buf out = {0};
        expect(estc_key_public(ctx, bad[i], &out), ESTC_ERR_ENGINE, bad[i]);
        const char *detail = estc_ctx_error_detail(ctx);
        ck_assert_msg(strstr(detail, "Tss2_TctiLdr_Initialize") != NULL, "%s", detail);
    }
}
END_TEST

START_TEST(custom_srk)
{
    /* A prefix's srk= is used (and the SRK made there when absent). */
    const char *k = "tpm2:handle=0x810002fc?srk=0x81000002";
    expect(estc_key_generate(ctx, k, ESTC_KEY_EC_P256), ESTC_OK, "keygen");
    bool found = false;
    expect(estc_object_exists(ctx, "tpm2:handle=0x81000002", ESTC_OBJ_KEY, &found), ESTC_OK,
           "srk exists");
    ck_assert(found);
    sign_verify(k, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    expect(estc_key_remove(ctx, k), ESTC_OK, "remove");
}
END_TEST

/* Whether @sig over @digest verifies under SubjectPublicKeyInfo @spki. */
static bool verifies(const estc_buf *spki, estc_sig_alg alg, const uint8_t *digest,
                     const estc_buf *sig)
{
    const uint8_t *p = spki->data;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)spki->len);
    EVP_PKEY_CTX *vc = pk != NULL ? EVP_PKEY_CTX_new(pk, NULL) : NULL;
    bool ok =
        vc != NULL && EVP_PKEY_verify_init(vc) == 1 &&
        EVP_PKEY_CTX_set_signature_md(vc, EVP_sha256()) == 1 &&
        (alg != ESTC_SIG_RSA_PKCS1 || EVP_PKEY_CTX_set_rsa_padding(vc, RSA_PKCS1_PADDING) == 1) &&
        EVP_PKEY_verify(vc, sig->data, sig->len, digest, 32) == 1;
    EVP_PKEY_CTX_free(vc);
    EVP_PKEY_free(pk);
    ERR_clear_error();
    return ok;
}

/*
 * steps ADDR STEP...: one context, so that the driver's cache of open keys
 * lives across the steps, while other programs change the TPM in between:
 *   sign:ecdsa | sign:pkcs1  signs a random SHA-256 digest; prints
 *                            "sign ERR" (ESTC_OK or the error's name)
 *   run:COMMAND              runs COMMAND with system(); prints "run RC"
 *   public                   reads the public key; prints "public ERR" and,
 *                            after a successful signature, "now yes|no"
 *                            (whether the last signature verifies under it)
 *                            and "first yes|no" (under the first public key
 *                            read)
 * The transcript on stdout is what cache.sh compares.
 */
static int steps(int argc, char **argv)
{
    estc_ctx *c = NULL;
    if (estc_ctx_new(&c) != ESTC_OK)
        return 2;
    const char *addr = argv[2];
    estc_buf first = {0}, now = {0}, sig = {0};
    uint8_t digest[32];
    estc_sig_alg alg = ESTC_SIG_ECDSA;
    bool have_sig = false;
    for (int i = 3; i < argc; i++) {
        if (strncmp(argv[i], "sign:", 5) == 0) {
            alg = strcmp(argv[i] + 5, "pkcs1") == 0 ? ESTC_SIG_RSA_PKCS1 : ESTC_SIG_ECDSA;
            if (RAND_bytes(digest, sizeof(digest)) != 1)
                return 2;
            estc_buf_free(&sig);
            estc_err err = estc_key_sign(c, addr, alg, ESTC_HASH_SHA256, digest, 32, &sig);
            have_sig = err == ESTC_OK;
            printf("sign %s\n", estc_err_name(err));
            if (err != ESTC_OK)
                fprintf(stderr, "sign: %s\n", estc_ctx_error_detail(c));
        } else if (strncmp(argv[i], "run:", 4) == 0) {
            fflush(stdout);
            int rc = system(argv[i] + 4);
            printf("run %d\n", rc);
        } else if (strcmp(argv[i], "public") == 0) {
            estc_buf_free(&now);
            estc_err err = estc_key_public(c, addr, &now);
            printf("public %s\n", estc_err_name(err));
            if (err == ESTC_OK && first.len == 0)
                if (estc_buf_set(&first, now.data, now.len) != ESTC_OK)
                    return 2;
            if (err == ESTC_OK && have_sig) {
                printf("now %s\n", verifies(&now, alg, digest, &sig) ? "yes" : "no");
                printf("first %s\n", verifies(&first, alg, digest, &sig) ? "yes" : "no");
            }
        } else {
            fprintf(stderr, "steps: unknown step %s\n", argv[i]);
            return 2;
        }
        fflush(stdout);
    }
    estc_buf_free(&first);
    estc_buf_free(&now);
    estc_buf_free(&sig);
    estc_ctx_free(c);
    return 0;
}

/* Helper modes for run.sh: keygen ADDR TYPE | public ADDR | sign ADDR | remove ADDR.
 * public writes the SPKI DER and sign reads a SHA-256 digest, both on stdio. */
static int tool(int argc, char **argv)
{
    estc_ctx *c = NULL;
    if (estc_ctx_new(&c) != ESTC_OK)
        return 2;
    const char *addr = argc > 2 ? argv[2] : "";
    estc_err err = ESTC_ERR_INVALID_ARG;
    estc_buf out = {0};
    if (strcmp(argv[1], "keygen") == 0 && argc > 3) {
        estc_key_type t = strcmp(argv[3], "p384")
                              ? strcmp(argv[3], "rsa2048") ? ESTC_KEY_EC_P256 : ESTC_KEY_RSA_2048
                              : ESTC_KEY_EC_P384;
        err = estc_key_generate(c, addr, t);
    } else if (strcmp(argv[1], "public") == 0) {
        err = estc_key_public(c, addr, &out);
    } else if (strcmp(argv[1], "sign") == 0) {
        /* sign ADDR [pkcs1]: ECDSA, or RSASSA-PKCS1-v1_5, over SHA-256. */
        uint8_t d[32];
        estc_sig_alg alg =
            argc > 3 && strcmp(argv[3], "pkcs1") == 0 ? ESTC_SIG_RSA_PKCS1 : ESTC_SIG_ECDSA;
        if (fread(d, 1, sizeof(d), stdin) == sizeof(d))
            err = estc_key_sign(c, addr, alg, ESTC_HASH_SHA256, d, sizeof(d), &out);
    } else if (strcmp(argv[1], "remove") == 0) {
        err = estc_key_remove(c, addr);
    } else if (strcmp(argv[1], "keygen-pair") == 0 && argc > 3) {
        /* keygen-pair A B: two P-256 keys in one context, so that what one
         * address set on the shared connection shows in the next. */
        err = estc_key_generate(c, addr, ESTC_KEY_EC_P256);
        if (err == ESTC_OK) {
            addr = argv[3];
            err = estc_key_generate(c, addr, ESTC_KEY_EC_P256);
        }
    } else if (strcmp(argv[1], "import") == 0) {
        /* import ADDR < PKCS#8 DER */
        static uint8_t p8[16384];
        size_t n = fread(p8, 1, sizeof(p8), stdin);
        err = estc_key_import(c, addr, p8, n);
    }
    if (err == ESTC_OK && out.len > 0 && fwrite(out.data, 1, out.len, stdout) != out.len)
        err = ESTC_ERR_IO;
    if (err != ESTC_OK)
        fprintf(stderr, "%s %s: %s: %s\n", argv[1], addr, estc_err_name(err),
                estc_ctx_error_detail(c));
    estc_buf_free(&out);
    estc_ctx_free(c);
    return err == ESTC_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "steps") == 0)
        return steps(argc, argv);
    if (argc > 1)
        return tool(argc, argv);
    Suite *s = suite_create("tpm2");
    TCase *tc = tcase_create("engine");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, bad_addresses);
    tcase_add_test(tc, wrong_tcti);
    tcase_add_test(tc, missing_objects);
    tcase_add_test(tc, ec_p256_sign_verify);
    tcase_add_test(tc, ec_p384_sign_verify);
    tcase_add_test(tc, replaced_key);
    tcase_add_test(tc, rsa2048_sign_verify);
    tcase_add_test(tc, import_pkcs8);
    tcase_add_test(tc, nv_chunks_and_limits);
    tcase_add_test(tc, derive_and_list);
    tcase_add_test(tc, collision_is_exists);
    tcase_add_test(tc, custom_srk);
    tcase_add_test(tc, derive_key_files);
    tcase_add_test(tc, key_file_rules);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
