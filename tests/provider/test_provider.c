/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The provider in process, with mem: keys (and, when ESTC_TEST_KEY_ADDR
 * names one, a key of another engine): keys from the STORE and from the PEM
 * reference, CSR signing checked by software verification, RSA PKCS#1 and
 * PSS, key parameters, and that no API exports the private key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/x509.h>

#include <estc/engine.h>
#include <estc/provider.h>

#include "../fixtures/check_main.h"

static estc_ctx *ctx;
static OSSL_LIB_CTX *libctx;
static estc_provider *prov;

#define EC256 "mem:ec256"
#define EC384 "mem:ec384"
#define RSA2K "mem:rsa2048"

static void setup(void)
{
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    libctx = OSSL_LIB_CTX_new();
    ck_assert_ptr_nonnull(libctx);
    ck_assert_int_eq(estc_provider_load(ctx, libctx, &prov), ESTC_OK);
    ck_assert_int_eq(estc_key_generate(ctx, EC256, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_key_generate(ctx, EC384, ESTC_KEY_EC_P384), ESTC_OK);
    ck_assert_int_eq(estc_key_generate(ctx, RSA2K, ESTC_KEY_RSA_2048), ESTC_OK);
}

static void teardown(void)
{
    estc_provider_unload(prov);
    prov = NULL;
    OSSL_LIB_CTX_free(libctx);
    libctx = NULL;
    estc_ctx_free(ctx);
    ctx = NULL;
    ERR_clear_error();
}

static bool count_fn(void *arg, const char *addr, estc_obj_kind kind)
{
    (void)addr;
    (void)kind;
    (*(size_t *)arg)++;
    return true;
}

static size_t count_keys(void)
{
    size_t n = 0;

    ck_assert_int_eq(estc_object_list(ctx, "mem:", ESTC_OBJ_KEY, count_fn, &n), ESTC_OK);
    return n;
}

/* The key at @addr through OSSL_STORE, or NULL. */
static EVP_PKEY *store_key(const char *addr)
{
    OSSL_STORE_CTX *sc = OSSL_STORE_open_ex(addr, libctx, NULL, NULL, NULL, NULL, NULL, NULL);
    EVP_PKEY *pkey = NULL;

    if (sc == NULL)
        return NULL;
    while (pkey == NULL && !OSSL_STORE_eof(sc)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(sc);

        if (info != NULL && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
        if (info == NULL && OSSL_STORE_error(sc))
            break;
    }
    OSSL_STORE_close(sc);
    return pkey;
}

/* The key behind a PEM reference to @addr, read as a private key. */
static EVP_PKEY *ref_key(const char *addr)
{
    estc_buf pem = {0};
    EVP_PKEY *pkey;
    BIO *bio;

    ck_assert_int_eq(estc_keyref_pem(addr, &pem), ESTC_OK);
    bio = BIO_new_mem_buf(pem.data, (int)pem.len);
    ck_assert_ptr_nonnull(bio);
    pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, NULL, NULL, libctx, NULL);
    BIO_free(bio);
    estc_buf_free(&pem);
    return pkey;
}

/* The engine's public key as a plain software key. */
static EVP_PKEY *engine_pub(const char *addr)
{
    estc_buf spki = {0};
    const unsigned char *p;
    EVP_PKEY *pub;

    ck_assert_int_eq(estc_key_public(ctx, addr, &spki), ESTC_OK);
    p = spki.data;
    pub = d2i_PUBKEY_ex(NULL, &p, (long)spki.len, libctx, "provider=default");
    ck_assert_ptr_nonnull(pub);
    estc_buf_free(&spki);
    return pub;
}

/* A CSR signed with @pkey, re-parsed from DER, verified in software. */
static void csr_roundtrip(EVP_PKEY *pkey, const char *md, const char *addr, bool pss)
{
    X509_REQ *req = X509_REQ_new_ex(libctx, NULL), *back;
    X509_NAME *name = X509_NAME_new();
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pub, *want;
    unsigned char *der = NULL;
    const unsigned char *p;
    int len;

    ck_assert_ptr_nonnull(req);
    ck_assert_int_eq(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"estc test", -1, -1, 0),
                     1);
    ck_assert_int_eq(X509_REQ_set_subject_name(req, name), 1);
    ck_assert_int_eq(X509_REQ_set_pubkey(req, pkey), 1);
    ck_assert_int_eq(EVP_DigestSignInit_ex(mctx, &pctx, md, libctx, NULL, pkey, NULL), 1);
    if (pss) {
        ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 0);
        ck_assert_int_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 0);
    }
    ck_assert_int_gt(X509_REQ_sign_ctx(req, mctx), 0);
    len = i2d_X509_REQ(req, &der);
    ck_assert_int_gt(len, 0);

    p = der;
    back = d2i_X509_REQ(NULL, &p, len);
    ck_assert_ptr_nonnull(back);
    pub = X509_REQ_get0_pubkey(back);
    ck_assert_ptr_nonnull(pub);
    want = engine_pub(addr);
    ck_assert_int_eq(EVP_PKEY_eq(pub, want), 1);
    ck_assert_int_eq(X509_REQ_verify_ex(back, want, libctx, NULL), 1);
    /* Verification through the engine key itself works as well. */
    ck_assert_int_eq(X509_REQ_verify_ex(back, pkey, libctx, NULL), 1);

    EVP_PKEY_free(want);
    X509_REQ_free(back);
    OPENSSL_free(der);
    EVP_MD_CTX_free(mctx);
    X509_NAME_free(name);
    X509_REQ_free(req);
}

START_TEST(store_key_signs_csr)
{
    EVP_PKEY *pkey = store_key(EC256);

    ck_assert_ptr_nonnull(pkey);
    ck_assert_int_eq(EVP_PKEY_is_a(pkey, "EC"), 1);
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey)), ESTC_PROVIDER_NAME);
    csr_roundtrip(pkey, "SHA256", EC256, false);
    csr_roundtrip(pkey, "SHA384", EC256, false);
    EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(reference_key_signs_csr)
{
    EVP_PKEY *pkey = ref_key(EC384);

    ck_assert_ptr_nonnull(pkey);
    ck_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey)), ESTC_PROVIDER_NAME);
    csr_roundtrip(pkey, "SHA384", EC384, false);
    EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(rsa_pkcs1_and_pss)
{
    EVP_PKEY *pkey = ref_key(RSA2K);

    ck_assert_ptr_nonnull(pkey);
    ck_assert_int_eq(EVP_PKEY_is_a(pkey, "RSA"), 1);
    csr_roundtrip(pkey, "SHA256", RSA2K, false);
    csr_roundtrip(pkey, "SHA512", RSA2K, false);
    csr_roundtrip(pkey, "SHA256", RSA2K, true);
    EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(key_parameters)
{
    EVP_PKEY *ec = store_key(EC384), *rsa = store_key(RSA2K), *pub = engine_pub(EC384);
    char group[64];
    unsigned char *enc = NULL, *want = NULL;
    size_t enc_len, want_len;

    ck_assert_ptr_nonnull(ec);
    ck_assert_ptr_nonnull(rsa);
    ck_assert_int_eq(EVP_PKEY_get_bits(ec), 384);
    ck_assert_int_eq(EVP_PKEY_get_security_bits(ec), 192);
    ck_assert_int_eq(EVP_PKEY_get_size(ec), EVP_PKEY_get_size(pub));
    ck_assert_int_eq(EVP_PKEY_get_group_name(ec, group, sizeof(group), NULL), 1);
    ck_assert_str_eq(group, "secp384r1");
    enc_len = EVP_PKEY_get1_encoded_public_key(ec, &enc);
    want_len = EVP_PKEY_get1_encoded_public_key(pub, &want);
    ck_assert_uint_gt(enc_len, 0);
    ck_assert_uint_eq(enc_len, want_len);
    ck_assert_mem_eq(enc, want, enc_len);
    ck_assert_int_eq(EVP_PKEY_get_bits(rsa), 2048);
    ck_assert_int_eq(EVP_PKEY_get_security_bits(rsa), 112);
    ck_assert_int_eq(EVP_PKEY_get_size(rsa), 256);
    /* The engine key and its software public copy are the same key. */
    ck_assert_int_eq(EVP_PKEY_eq(ec, pub), 1);
    ck_assert_int_eq(EVP_PKEY_eq(pub, ec), 1);
    ck_assert_int_ne(EVP_PKEY_eq(ec, rsa), 1);
    OPENSSL_free(enc);
    OPENSSL_free(want);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}
END_TEST

START_TEST(private_key_never_exported)
{
    const char *addrs[] = {EC256, RSA2K};

    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *pkey = store_key(addrs[i]);
        OSSL_PARAM *params = NULL;
        BIGNUM *bn = NULL;
        unsigned char *der = NULL;
        BIO *out = BIO_new(BIO_s_mem());

        ck_assert_ptr_nonnull(pkey);
        ck_assert_int_le(EVP_PKEY_todata(pkey, EVP_PKEY_KEYPAIR, &params), 0);
        ck_assert_ptr_null(params);
        ERR_clear_error();
        ck_assert_int_eq(PEM_write_bio_PrivateKey(out, pkey, NULL, NULL, 0, NULL, NULL), 0);
        ck_assert_int_le(i2d_PrivateKey(pkey, &der), 0);
        ck_assert_int_eq(PEM_write_bio_PKCS8PrivateKey(out, pkey, NULL, NULL, 0, NULL, NULL), 0);
        ck_assert_int_eq(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &bn), 0);
        ck_assert_int_eq(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &bn), 0);
        ck_assert_int_eq((int)BIO_ctrl_pending(out), 0);
        ERR_clear_error();
        /* The public part exports fine. */
        ck_assert_int_eq(EVP_PKEY_todata(pkey, EVP_PKEY_PUBLIC_KEY, &params), 1);
        ck_assert_int_eq(PEM_write_bio_PUBKEY(out, pkey), 1);
        OSSL_PARAM_free(params);
        BIO_free(out);
        EVP_PKEY_free(pkey);
    }
}
END_TEST

START_TEST(bad_references_fail_cleanly)
{
    static const char *const bad_pem[] = {
        "-----BEGIN ESTC KEY REFERENCE-----\nbm90IGFuIGFkZHJlc3M=\n"
        "-----END ESTC KEY REFERENCE-----\n", /* "not an address" */
        "-----BEGIN ESTC KEY REFERENCE-----\nbWVtOm5vbmU=\n"
        "-----END ESTC KEY REFERENCE-----\n", /* "mem:none": no such key */
        "-----BEGIN ESTC KEY REFERENCE-----\nbm9zdWNoOmtleQ==\n"
        "-----END ESTC KEY REFERENCE-----\n", /* "nosuch:key": no such engine */
        "-----BEGIN ESTC KEY REFERENCE-----\n!!!!\n-----END ESTC KEY REFERENCE-----\n",
        "garbage",
    };
    size_t before = count_keys();
    estc_buf pem = {0};
    char *addr = NULL;

    for (size_t i = 0; i < sizeof(bad_pem) / sizeof(bad_pem[0]); i++) {
        BIO *bio = BIO_new_mem_buf(bad_pem[i], -1);
        EVP_PKEY *pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, NULL, NULL, libctx, NULL);

        ck_assert_msg(pkey == NULL, "case %zu decoded", i);
        ck_assert_int_ne((int)ERR_peek_error(), 0);
        ERR_clear_error();
        BIO_free(bio);
        ck_assert_int_eq(estc_keyref_read((const uint8_t *)bad_pem[i], strlen(bad_pem[i]), &addr),
                         i == 1 || i == 2 ? ESTC_OK : ESTC_ERR_FORMAT);
        free(addr);
        addr = NULL;
    }
    /* A store address without a key yields no key. */
    ck_assert_ptr_null(store_key("mem:none"));
    ERR_clear_error();
    ck_assert_int_eq(estc_keyref_pem("no address", &pem), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(estc_keyref_pem(NULL, &pem), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_keyref_pem(EC256, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_uint_eq(count_keys(), before);
    /* A second load into the same library context is refused. */
    {
        estc_provider *again = NULL;

        ck_assert_int_eq(estc_provider_load(ctx, libctx, &again), ESTC_ERR_EXISTS);
        ck_assert_ptr_null(again);
        ck_assert_int_eq(estc_provider_load(NULL, libctx, &again), ESTC_ERR_INVALID_ARG);
    }
}
END_TEST

START_TEST(unsupported_digests_refused)
{
    EVP_PKEY *pkey = store_key(EC256);
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char sig[256];
    size_t siglen = sizeof(sig);

    ck_assert_ptr_nonnull(pkey);
    ck_assert_int_le(EVP_DigestSignInit_ex(mctx, NULL, "SHA1", libctx, NULL, pkey, NULL), 0);
    ERR_clear_error();
    /* A bare digest of a length no hash has. */
    pctx = EVP_PKEY_CTX_new_from_pkey(libctx, pkey, NULL);
    ck_assert_int_eq(EVP_PKEY_sign_init(pctx), 1);
    ck_assert_int_le(EVP_PKEY_sign(pctx, sig, &siglen, (const unsigned char *)"0123456789", 10), 0);
    ERR_clear_error();
    /* A bare SHA-256 digest signs. */
    siglen = sizeof(sig);
    ck_assert_int_eq(EVP_PKEY_sign(pctx, sig, &siglen,
                                   (const unsigned char *)"0123456789abcdef0123456789abcdef", 32),
                     1);
    EVP_PKEY_CTX_free(pctx);
    EVP_MD_CTX_free(mctx);
    EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(keyref_file_is_private)
{
    char dir[] = "/tmp/estc-provider-XXXXXX";
    char path[256];
    struct stat st;
    FILE *f;
    uint8_t buf[4096];
    size_t n;
    char *addr = NULL;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/key.pem", dir);
    ck_assert_int_eq(estc_keyref_write(ctx, path, EC256), ESTC_OK);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    ck_assert_int_eq(estc_keyref_read(buf, n, &addr), ESTC_OK);
    ck_assert_str_eq(addr, EC256);
    free(addr);
    /* A bad address leaves the existing file as it was. */
    ck_assert_int_eq(estc_keyref_write(ctx, path, "bad address"), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq((size_t)st.st_size, n);
    /* An unwritable place fails with ESTC_ERR_IO. */
    ck_assert_int_eq(estc_keyref_write(ctx, "/nonexistent-dir/key.pem", EC256), ESTC_ERR_IO);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* Everything on OpenSSL's error queue, as ERR_print_errors() shows it (the
 * queue is emptied). malloc'd. */
static char *error_queue_text(void)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *text;
    long n;

    ck_assert_ptr_nonnull(bio);
    ERR_print_errors(bio);
    n = BIO_get_mem_data(bio, &data);
    text = strndup(n > 0 ? data : "", n > 0 ? (size_t)n : 0);
    ck_assert_ptr_nonnull(text);
    BIO_free(bio);
    return text;
}

/* The provider's errors about the key at @addr, which holds "pin-value=" @pin,
 * name the address with the PIN hidden: private key export refused, and a
 * public-only copy of it asked for the private half. */
static void errors_hide_pin(const char *addr, const char *pin)
{
    EVP_PKEY *pkey = store_key(addr);
    OSSL_PARAM *params = NULL;
    char shown[64], *text;

    snprintf(shown, sizeof(shown), "pin-value=%s", pin);
    ck_assert_msg(pkey != NULL, "no key from the store");
    ERR_clear_error();
    ck_assert_int_le(EVP_PKEY_todata(pkey, EVP_PKEY_KEYPAIR, &params), 0);
    text = error_queue_text();
    ck_assert_msg(strstr(text, "private key export refused") != NULL, "no refusal: %s", text);
    ck_assert_msg(strstr(text, "pin-value=***") != NULL, "address not named: %s", text);
    ck_assert_msg(strstr(text, shown) == NULL, "PIN on the error queue: %s", text);
    free(text);
    EVP_PKEY_free(pkey);
}

#define PINNED_PIN "86420973"
#define PINNED "mem:pinned;pin-value=" PINNED_PIN

START_TEST(errors_never_show_pins)
{
    ck_assert_int_eq(estc_key_generate(ctx, PINNED, ESTC_KEY_EC_P256), ESTC_OK);
    errors_hide_pin(PINNED, PINNED_PIN);
}
END_TEST

/* A key of another engine, named by the fixture (for example a token). */
START_TEST(external_key)
{
    const char *addr = getenv("ESTC_TEST_KEY_ADDR");
    EVP_PKEY *a, *b;

    if (addr == NULL)
        return;
    a = store_key(addr);
    ck_assert_msg(a != NULL, "no key from the store for %s", addr);
    b = ref_key(addr);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(EVP_PKEY_eq(a, b), 1);
    csr_roundtrip(b, "SHA256", addr, false);
    EVP_PKEY_free(b);
    EVP_PKEY_free(a);
    /* Its PIN, if it has one, stays off the error queue. */
    char *pin = NULL;
    if (estc_address_attr(addr, "pin-value", &pin, NULL) == ESTC_OK)
        errors_hide_pin(addr, pin);
    free(pin);
}
END_TEST

/* The default library context, the one libssl and libcoap use. */
START_TEST(default_libctx)
{
    estc_ctx *c2 = NULL;
    estc_provider *p2 = NULL;
    EVP_PKEY *pkey;
    OSSL_LIB_CTX *saved = libctx;

    ck_assert_int_eq(estc_ctx_new(&c2), ESTC_OK);
    ck_assert_int_eq(estc_key_generate(c2, "mem:dflt", ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_provider_load(c2, NULL, &p2), ESTC_OK);
    libctx = NULL;
    pkey = store_key("mem:dflt");
    ck_assert_ptr_nonnull(pkey);
    EVP_PKEY_free(pkey);
    libctx = saved;
    estc_provider_unload(p2);
    estc_ctx_free(c2);
}
END_TEST

int main(void)
{
    TCase *tc;
    Suite *s = check_suite("provider", "in-process", setup, teardown, 60, &tc);

    tcase_add_test(tc, store_key_signs_csr);
    tcase_add_test(tc, reference_key_signs_csr);
    tcase_add_test(tc, rsa_pkcs1_and_pss);
    tcase_add_test(tc, key_parameters);
    tcase_add_test(tc, private_key_never_exported);
    tcase_add_test(tc, bad_references_fail_cleanly);
    tcase_add_test(tc, unsupported_digests_refused);
    tcase_add_test(tc, keyref_file_is_private);
    tcase_add_test(tc, errors_never_show_pins);
    tcase_add_test(tc, external_key);
    tcase_add_test(tc, default_libctx);
    return check_run(s);
}
