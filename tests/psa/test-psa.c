/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PSA driver checks beyond the conformance suite: the key policy (no
 * export), OpenSSL verification of every signature type, key file modes,
 * PKCS#8 import, the shared uid namespace of keys and ITS entries, address
 * and prefix syntax, and that failures leave stored objects as they were.
 *
 * Runs in the current folder, where mbed TLS keeps its files: the fixture
 * (run-psa.sh) makes it a fresh 0700 folder. Every case checks that the
 * number of ITS files is the same at its end as at its start.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <psa/crypto.h>

#include <estc/engine.h>

#define PREFIX                                                                                     \
    "psa:key-id-range=0x50000-0x5ffff;cert-uid-range=0x60000-0x6ffff;"                             \
    "trust-uid-range=0x70000-0x7ffff"

/* Declared here: mbed TLS 2.28 installs no header for its ITS functions. */
psa_status_t psa_its_set(uint64_t uid, uint32_t data_length, const void *p_data, uint32_t flags);
psa_status_t psa_its_remove(uint64_t uid);

static estc_ctx *ctx;
static size_t files_at_start;

static size_t count_its_files(void)
{
    DIR *d = opendir(".");
    ck_assert_ptr_nonnull(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 8 && strcmp(e->d_name + len - 8, ".psa_its") == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void setup(void)
{
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    files_at_start = count_its_files();
}

static void teardown(void)
{
    estc_ctx_free(ctx);
    ctx = NULL;
}

/* Checked at the end of each case's body (teardown failures are not reported
 * per case by Check in fork mode). */
static void assert_no_files_left(void)
{
    ck_assert_uint_eq(count_its_files(), files_at_start);
}

#define OK(call)                                                                                   \
    do {                                                                                           \
        estc_err e_ = (call);                                                                      \
        ck_assert_msg(e_ == ESTC_OK, "%s: %s (%s)", #call, estc_err_name(e_),                      \
                      estc_ctx_error_detail(ctx));                                                 \
    } while (0)

#define EXPECT(call, want)                                                                         \
    do {                                                                                           \
        estc_err e_ = (call);                                                                      \
        ck_assert_msg(e_ == (want), "%s: got %s, want %s (%s)", #call, estc_err_name(e_),          \
                      estc_err_name(want), estc_ctx_error_detail(ctx));                            \
    } while (0)

static char *derive(estc_obj_kind kind, const char *name)
{
    char *addr = NULL;
    OK(estc_address_derive(ctx, PREFIX, kind, name, &addr));
    return addr;
}

static unsigned long key_id_of(const char *addr)
{
    const char *p = strstr(addr, "key-id=");
    ck_assert_ptr_nonnull(p);
    return strtoul(p + 7, NULL, 0);
}

static estc_buf make_cert(const char *cn)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(key);
    ck_assert_ptr_nonnull(x);
    X509_NAME *name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, name);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    ck_assert_int_gt(X509_sign(x, key, EVP_sha256()), 0);
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    ck_assert_int_gt(n, 0);
    estc_buf out = {0};
    ck_assert_int_eq(estc_buf_set(&out, der, (size_t)n), ESTC_OK);
    OPENSSL_free(der);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(key);
    return out;
}

static const EVP_MD *md_of(estc_hash h)
{
    return h == ESTC_HASH_SHA256   ? EVP_sha256()
           : h == ESTC_HASH_SHA384 ? EVP_sha384()
                                   : EVP_sha512();
}

/* Signs a digest of @h through the engine and verifies it with OpenSSL. */
static void sign_and_verify(const char *addr, estc_sig_alg alg, estc_hash h)
{
    uint8_t digest[64];
    unsigned dlen = 0;
    const char msg[] = "estc psa signature check";
    ck_assert_int_eq(EVP_Digest(msg, sizeof(msg), digest, &dlen, md_of(h), NULL), 1);
    estc_buf spki = {0}, sig = {0};
    OK(estc_key_public(ctx, addr, &spki));
    OK(estc_key_sign(ctx, addr, alg, h, digest, dlen, &sig));

    const unsigned char *p = spki.data;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spki.len);
    ck_assert_ptr_nonnull(pub);
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    ck_assert_ptr_nonnull(pctx);
    ck_assert_int_eq(EVP_PKEY_verify_init(pctx), 1);
    ck_assert_int_eq(EVP_PKEY_CTX_set_signature_md(pctx, md_of(h)), 1);
    if (alg == ESTC_SIG_RSA_PKCS1)
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING), 1);
    if (alg == ESTC_SIG_RSA_PSS) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    ck_assert_msg(EVP_PKEY_verify(pctx, sig.data, sig.len, digest, dlen) == 1,
                  "%s: signature does not verify with OpenSSL", addr);
    /* A changed digest must not verify: the check above can fail. */
    digest[0] ^= 1;
    ck_assert_int_ne(EVP_PKEY_verify(pctx, sig.data, sig.len, digest, dlen), 1);
    EVP_PKEY_CTX_free(pctx);
    EVP_PKEY_free(pub);
    estc_buf_free(&spki);
    estc_buf_free(&sig);
}

/* The file mbed TLS keeps a key or entry in, and its permission bits. */
static int file_mode(unsigned long uid)
{
    char name[64];
    snprintf(name, sizeof(name), "%08lx%08lx.psa_its", 0ul, uid);
    struct stat sb;
    if (stat(name, &sb) != 0)
        return -1;
    return (int)(sb.st_mode & 0777);
}

START_TEST(generated_key_is_not_exportable)
{
    char *addr = derive(ESTC_OBJ_KEY, "noexport");
    OK(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256));
    unsigned long id = key_id_of(addr);
    ck_assert_int_eq(file_mode(id), 0600);

    ck_assert_int_eq(psa_crypto_init(), PSA_SUCCESS);
    uint8_t buf[512];
    size_t n = 0;
    ck_assert_int_eq(psa_export_key(id, buf, sizeof(buf), &n), PSA_ERROR_NOT_PERMITTED);
    ck_assert_uint_eq(n, 0);
    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    ck_assert_int_eq(psa_get_key_attributes(id, &a), PSA_SUCCESS);
    /* mbed TLS adds the matching *_MESSAGE usages by itself. */
    psa_key_usage_t usage = psa_get_key_usage_flags(&a);
    ck_assert(usage & PSA_KEY_USAGE_SIGN_HASH);
    ck_assert_int_eq(usage & (PSA_KEY_USAGE_EXPORT | PSA_KEY_USAGE_COPY), 0);
    ck_assert_int_eq(psa_get_key_lifetime(&a), PSA_KEY_LIFETIME_PERSISTENT);
    psa_reset_key_attributes(&a);

    OK(estc_key_remove(ctx, addr));
    ck_assert_int_eq(file_mode(id), -1);
    free(addr);
    assert_no_files_left();
}
END_TEST

static const struct {
    estc_key_type type;
    estc_sig_alg alg;
    estc_hash hash;
} sig_cases[] = {
    {ESTC_KEY_EC_P256, ESTC_SIG_ECDSA, ESTC_HASH_SHA256},
    {ESTC_KEY_EC_P384, ESTC_SIG_ECDSA, ESTC_HASH_SHA384},
    {ESTC_KEY_RSA_2048, ESTC_SIG_RSA_PKCS1, ESTC_HASH_SHA256},
    {ESTC_KEY_RSA_2048, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA256},
    {ESTC_KEY_RSA_2048, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA512},
};

START_TEST(signatures_verify_with_openssl)
{
    char name[32];
    snprintf(name, sizeof(name), "sig-%d", _i);
    char *addr = derive(ESTC_OBJ_KEY, name);
    OK(estc_key_generate(ctx, addr, sig_cases[_i].type));
    sign_and_verify(addr, sig_cases[_i].alg, sig_cases[_i].hash);

    /* A mismatched algorithm is refused, not silently changed. */
    uint8_t d[32] = {0};
    estc_buf sig = {0};
    estc_sig_alg wrong = sig_cases[_i].alg == ESTC_SIG_ECDSA ? ESTC_SIG_RSA_PSS : ESTC_SIG_ECDSA;
    EXPECT(estc_key_sign(ctx, addr, wrong, ESTC_HASH_SHA256, d, sizeof(d), &sig),
           ESTC_ERR_UNSUPPORTED);
    ck_assert_ptr_null(sig.data);

    OK(estc_key_remove(ctx, addr));
    EXPECT(estc_key_sign(ctx, addr, sig_cases[_i].alg, ESTC_HASH_SHA256, d, sizeof(d), &sig),
           ESTC_ERR_NOT_FOUND);
    /* mbed TLS 2.28 reports a missing persistent key as an invalid handle. */
    ck_assert(strstr(estc_ctx_error_detail(ctx), "PSA_ERROR_INVALID_HANDLE") != NULL ||
              strstr(estc_ctx_error_detail(ctx), "PSA_ERROR_DOES_NOT_EXIST") != NULL);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), addr));
    EXPECT(estc_key_remove(ctx, addr), ESTC_ERR_NOT_FOUND);
    free(addr);
    assert_no_files_left();
}
END_TEST

START_TEST(occupied_key_id_is_kept)
{
    char *addr = derive(ESTC_OBJ_KEY, "occupied");
    OK(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256));
    estc_buf before = {0}, after = {0};
    OK(estc_key_public(ctx, addr, &before));
    EXPECT(estc_key_generate(ctx, addr, ESTC_KEY_EC_P384), ESTC_ERR_EXISTS);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "PSA_ERROR_ALREADY_EXISTS"));
    OK(estc_key_public(ctx, addr, &after));
    ck_assert_uint_eq(before.len, after.len);
    ck_assert_mem_eq(before.data, after.data, before.len);
    OK(estc_key_remove(ctx, addr));
    estc_buf_free(&before);
    estc_buf_free(&after);
    free(addr);
    assert_no_files_left();
}
END_TEST

/* PKCS#8 DER of a fresh OpenSSL key. */
static estc_buf make_pkcs8(const char *alg, const char *param, EVP_PKEY **keep)
{
    EVP_PKEY *k = strcmp(alg, "RSA") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
                                          : EVP_PKEY_Q_keygen(NULL, NULL, alg, param);
    ck_assert_ptr_nonnull(k);
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    ck_assert_ptr_nonnull(p8);
    unsigned char *der = NULL;
    int n = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    ck_assert_int_gt(n, 0);
    estc_buf out = {0};
    ck_assert_int_eq(estc_buf_set(&out, der, (size_t)n), ESTC_OK);
    OPENSSL_clear_free(der, (size_t)n);
    PKCS8_PRIV_KEY_INFO_free(p8);
    *keep = k;
    return out;
}

static const struct {
    const char *alg, *param;
    estc_sig_alg sig;
    estc_hash hash;
} import_cases[] = {
    {"EC", "P-256", ESTC_SIG_ECDSA, ESTC_HASH_SHA256},
    {"EC", "P-384", ESTC_SIG_ECDSA, ESTC_HASH_SHA384},
    {"RSA", NULL, ESTC_SIG_RSA_PKCS1, ESTC_HASH_SHA256},
};

START_TEST(pkcs8_import)
{
    EVP_PKEY *k = NULL;
    estc_buf p8 = make_pkcs8(import_cases[_i].alg, import_cases[_i].param, &k);
    char name[32];
    snprintf(name, sizeof(name), "import-%d", _i);
    char *addr = derive(ESTC_OBJ_KEY, name);
    OK(estc_key_import(ctx, addr, p8.data, p8.len));
    ck_assert_int_eq(file_mode(key_id_of(addr)), 0600);

    /* The engine's public key is the imported key's. */
    estc_buf spki = {0};
    OK(estc_key_public(ctx, addr, &spki));
    unsigned char *want = NULL;
    int wn = i2d_PUBKEY(k, &want);
    ck_assert_int_gt(wn, 0);
    ck_assert_uint_eq(spki.len, (size_t)wn);
    ck_assert_mem_eq(spki.data, want, spki.len);
    OPENSSL_free(want);
    sign_and_verify(addr, import_cases[_i].sig, import_cases[_i].hash);

    ck_assert_int_eq(psa_crypto_init(), PSA_SUCCESS);
    uint8_t buf[4096];
    size_t n = 0;
    ck_assert_int_eq(psa_export_key(key_id_of(addr), buf, sizeof(buf), &n),
                     PSA_ERROR_NOT_PERMITTED);

    /* Importing over it fails and keeps it. */
    EXPECT(estc_key_import(ctx, addr, p8.data, p8.len), ESTC_ERR_EXISTS);
    OK(estc_key_remove(ctx, addr));

    estc_buf_free(&spki);
    estc_buf_free(&p8);
    EVP_PKEY_free(k);
    free(addr);
    assert_no_files_left();
}
END_TEST

START_TEST(bad_imports_leave_nothing)
{
    char *addr = derive(ESTC_OBJ_KEY, "badimport");
    EVP_PKEY *k = NULL;
    estc_buf p8 = make_pkcs8("EC", "P-521", &k);
    EXPECT(estc_key_import(ctx, addr, p8.data, p8.len), ESTC_ERR_UNSUPPORTED);
    estc_buf_free(&p8);
    EVP_PKEY_free(k);

    p8 = make_pkcs8("ED25519", NULL, &k);
    EXPECT(estc_key_import(ctx, addr, p8.data, p8.len), ESTC_ERR_UNSUPPORTED);
    /* Truncated and trailing-garbage DER. */
    EXPECT(estc_key_import(ctx, addr, p8.data, p8.len - 1), ESTC_ERR_FORMAT);
    estc_buf_free(&p8);
    EVP_PKEY_free(k);

    p8 = make_pkcs8("EC", "P-256", &k);
    uint8_t *longer = malloc(p8.len + 1);
    ck_assert_ptr_nonnull(longer);
    memcpy(longer, p8.data, p8.len);
    longer[p8.len] = 0;
    EXPECT(estc_key_import(ctx, addr, longer, p8.len + 1), ESTC_ERR_FORMAT);
    free(longer);
    uint8_t junk[40];
    memset(junk, 0x30, sizeof(junk));
    EXPECT(estc_key_import(ctx, addr, junk, sizeof(junk)), ESTC_ERR_FORMAT);

    bool found = true;
    OK(estc_object_exists(ctx, addr, ESTC_OBJ_KEY, &found));
    ck_assert(!found);
    estc_buf_free(&p8);
    EVP_PKEY_free(k);
    free(addr);
    assert_no_files_left();
}
END_TEST

START_TEST(certificates_in_its)
{
    char *c = derive(ESTC_OBJ_CERT, "ee");
    char *t = derive(ESTC_OBJ_TRUST, "ca");
    ck_assert_str_ne(c, t);
    estc_buf cd = make_cert("ee"), td = make_cert("ca"), back = {0};
    OK(estc_cert_store(ctx, c, cd.data, cd.len));
    OK(estc_trust_store(ctx, t, td.data, td.len));
    OK(estc_cert_load(ctx, c, &back));
    ck_assert_uint_eq(back.len, cd.len);
    ck_assert_mem_eq(back.data, cd.data, cd.len);
    estc_buf_free(&back);

    /* An occupied uid keeps its certificate. */
    EXPECT(estc_cert_store(ctx, c, td.data, td.len), ESTC_ERR_EXISTS);
    OK(estc_cert_load(ctx, c, &back));
    ck_assert_mem_eq(back.data, cd.data, cd.len);
    estc_buf_free(&back);

    /* Malformed DER never reaches the storage. */
    EXPECT(estc_cert_store(ctx, "psa:uid=0x6ff00", cd.data, cd.len - 1), ESTC_ERR_FORMAT);
    bool found = true;
    OK(estc_object_exists(ctx, "psa:uid=0x6ff00", ESTC_OBJ_CERT, &found));
    ck_assert(!found);

    OK(estc_cert_remove(ctx, c));
    OK(estc_trust_remove(ctx, t));
    EXPECT(estc_cert_remove(ctx, c), ESTC_ERR_NOT_FOUND);
    EXPECT(estc_cert_load(ctx, t, &back), ESTC_ERR_NOT_FOUND);
    estc_buf_free(&cd);
    estc_buf_free(&td);
    free(c);
    free(t);
    assert_no_files_left();
}
END_TEST

/* Keys and ITS entries share mbed TLS's uid namespace: neither side may
 * read, replace or remove the other. */
START_TEST(keys_and_entries_do_not_mix)
{
    OK(estc_key_generate(ctx, "psa:key-id=0x5abcd", ESTC_KEY_EC_P256));
    estc_buf cd = make_cert("clash"), back = {0};
    EXPECT(estc_cert_store(ctx, "psa:uid=0x5abcd", cd.data, cd.len), ESTC_ERR_EXISTS);
    EXPECT(estc_cert_load(ctx, "psa:uid=0x5abcd", &back), ESTC_ERR_FORMAT);
    ck_assert_ptr_null(back.data);
    EXPECT(estc_cert_remove(ctx, "psa:uid=0x5abcd"), ESTC_ERR_FORMAT);
    bool found = true;
    OK(estc_object_exists(ctx, "psa:uid=0x5abcd", ESTC_OBJ_CERT, &found));
    ck_assert(!found);
    sign_and_verify("psa:key-id=0x5abcd", ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    OK(estc_key_remove(ctx, "psa:key-id=0x5abcd"));

    OK(estc_cert_store(ctx, "psa:uid=0x6abcd", cd.data, cd.len));
    EXPECT(estc_key_generate(ctx, "psa:key-id=0x6abcd", ESTC_KEY_EC_P256), ESTC_ERR_EXISTS);
    ck_assert_int_ne(estc_key_remove(ctx, "psa:key-id=0x6abcd"), ESTC_OK);
    found = true;
    OK(estc_object_exists(ctx, "psa:key-id=0x6abcd", ESTC_OBJ_KEY, &found));
    ck_assert(!found);
    OK(estc_cert_load(ctx, "psa:uid=0x6abcd", &back));
    ck_assert_mem_eq(back.data, cd.data, cd.len);
    OK(estc_cert_remove(ctx, "psa:uid=0x6abcd"));
    estc_buf_free(&back);
    estc_buf_free(&cd);
    assert_no_files_left();
}
END_TEST

struct collected {
    char *addrs[16];
    size_t n;
};

static bool collect(void *arg, const char *addr, estc_obj_kind kind)
{
    struct collected *c = arg;
    (void)kind;
    if (c->n < 16)
        c->addrs[c->n++] = strdup(addr);
    return true;
}

static void collected_free(struct collected *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->addrs[i]);
    c->n = 0;
}

START_TEST(list_finds_exactly_its_range)
{
    estc_buf cd = make_cert("listed");
    char *t1 = derive(ESTC_OBJ_TRUST, "l1");
    char *t2 = derive(ESTC_OBJ_TRUST, "l2");
    char *c1 = derive(ESTC_OBJ_CERT, "l3");
    char *k1 = derive(ESTC_OBJ_KEY, "l4");
    OK(estc_trust_store(ctx, t1, cd.data, cd.len));
    OK(estc_trust_store(ctx, t2, cd.data, cd.len));
    OK(estc_cert_store(ctx, c1, cd.data, cd.len));
    OK(estc_key_generate(ctx, k1, ESTC_KEY_EC_P256));
    /* Foreign data inside the trust range and a trust certificate outside
     * it are not listed, and survive. */
    ck_assert_int_eq(psa_crypto_init(), PSA_SUCCESS);
    ck_assert_int_eq(psa_its_set(0x7fffe, 5, "hello", 0), PSA_SUCCESS);
    OK(estc_trust_store(ctx, "psa:uid=0x80000", cd.data, cd.len));

    struct collected got = {0};
    OK(estc_trust_list(ctx, PREFIX, collect, &got));
    ck_assert_uint_eq(got.n, 2);
    ck_assert(strcmp(got.addrs[0], t1) == 0 || strcmp(got.addrs[1], t1) == 0);
    ck_assert(strcmp(got.addrs[0], t2) == 0 || strcmp(got.addrs[1], t2) == 0);
    collected_free(&got);
    OK(estc_object_list(ctx, PREFIX, ESTC_OBJ_CERT, collect, &got));
    ck_assert_uint_eq(got.n, 1);
    ck_assert_str_eq(got.addrs[0], c1);
    collected_free(&got);
    OK(estc_object_list(ctx, PREFIX, ESTC_OBJ_KEY, collect, &got));
    ck_assert_uint_eq(got.n, 1);
    ck_assert_str_eq(got.addrs[0], k1);
    collected_free(&got);

    EXPECT(estc_trust_remove(ctx, "psa:uid=0x7fffe"), ESTC_ERR_FORMAT);
    ck_assert_int_eq(psa_its_remove(0x7fffe), PSA_SUCCESS);
    OK(estc_trust_remove(ctx, "psa:uid=0x80000"));
    OK(estc_trust_remove(ctx, t1));
    OK(estc_trust_remove(ctx, t2));
    OK(estc_cert_remove(ctx, c1));
    OK(estc_key_remove(ctx, k1));
    OK(estc_trust_list(ctx, PREFIX, collect, &got));
    ck_assert_uint_eq(got.n, 0);
    estc_buf_free(&cd);
    free(t1);
    free(t2);
    free(c1);
    free(k1);
    assert_no_files_left();
}
END_TEST

START_TEST(derive_is_deterministic_and_in_range)
{
    char *a = derive(ESTC_OBJ_KEY, "estc-key-0123456789abcdef");
    char *b = derive(ESTC_OBJ_KEY, "estc-key-0123456789abcdef");
    ck_assert_str_eq(a, b);
    unsigned long id = key_id_of(a);
    ck_assert(id >= 0x50000 && id <= 0x5ffff);
    /* The id is the first 8 bytes of SHA-256(name), big-endian, modulo the
     * range: fixed, or keys stored by an earlier version are not found by
     * their name. */
    ck_assert_uint_eq(id, 0x58cc0);
    char *t = NULL;
    OK(estc_address_derive(ctx, "psa:", ESTC_OBJ_TRUST, "x", &t));
    ck_assert_str_eq(t, "psa:uid=0x3b044");
    char *one = NULL;
    OK(estc_address_derive(ctx, "psa:key-id-range=0x100-0x100", ESTC_OBJ_KEY, "any", &one));
    ck_assert_str_eq(one, "psa:key-id=0x100");
    free(one);
    one = NULL;
    /* RFC 7512 syntax: a query part and percent-encoding are understood. */
    OK(estc_address_derive(ctx, "psa:key-id-range=0x100-0x100?trust-uid-range=0x300-0x3%30%30",
                           ESTC_OBJ_TRUST, "any", &one));
    ck_assert_str_eq(one, "psa:uid=0x300");
    free(a);
    free(b);
    free(t);
    free(one);
    assert_no_files_left();
}
END_TEST

START_TEST(bad_addresses)
{
    const char *bad_keys[] = {
        "psa:",
        "psa:key-id=",
        "psa:key-id=0",
        "psa:key-id=0x40000000",
        "psa:key-id=zz",
        "psa:key-id=1;key-id=2",
        "psa:foo=1",
        "psa:uid=0x20001",
        "psa:key-id=0x",
        "psa:key-id=-1",
        "psa:key-id=1?x=2",
        "psa:key-id=%zz",
        "psa:key-id=1&uid=2",
        "psa:key-id=%31;key-id=1",
        "psa:key-id=1?key-id=1",
        "psa:key-id=99999999999999999999999",
        "psa:=1",
    };
    for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++) {
        EXPECT(estc_key_generate(ctx, bad_keys[i], ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
        ck_assert_str_ne(estc_ctx_error_detail(ctx), "");
    }
    /* Empty segments are skipped, as in every attribute address: these all
     * name key 1. */
    bool found = false;
    OK(estc_key_generate(ctx, "psa:key-id=1;", ESTC_KEY_EC_P256));
    OK(estc_object_exists(ctx, "psa:;key-id=1?", ESTC_OBJ_KEY, &found));
    ck_assert(found);
    OK(estc_key_remove(ctx, "psa:key-id=1?&"));
    estc_buf cd = make_cert("bad"), b = {0};
    const char *bad_uids[] = {"psa:uid=0", "psa:uid=0xffffff74", "psa:key-id=0x20001",
                              "psa:uid=0x1ffffffffffffffff", "psa:uid=1;uid=2"};
    for (size_t i = 0; i < sizeof(bad_uids) / sizeof(bad_uids[0]); i++) {
        EXPECT(estc_cert_store(ctx, bad_uids[i], cd.data, cd.len), ESTC_ERR_BAD_ADDRESS);
        EXPECT(estc_cert_load(ctx, bad_uids[i], &b), ESTC_ERR_BAD_ADDRESS);
    }
    const char *bad_prefixes[] = {
        "psa:key-id-range=0x10-0x5",        /* reversed */
        "psa:key-id-range=0x10000-0x2ffff", /* overlaps certs */
        "psa:cert-uid-range=0x1000-0x2000;trust-uid-range=0x1800-0x3000",
        "psa:key-id-range=0x3fffff00-0x40000010",    /* past user range */
        "psa:trust-uid-range=0x1-0x200000",          /* too wide to list */
        "psa:cert-uid-range=0xfffffff0-0x100000010", /* mbed TLS's own uids */
        "psa:key-id=0x10001",                        /* an object, no prefix */
        "psa:key-id-range=0x10000",
    };
    char *addr = NULL;
    struct collected got = {0};
    for (size_t i = 0; i < sizeof(bad_prefixes) / sizeof(bad_prefixes[0]); i++) {
        EXPECT(estc_address_derive(ctx, bad_prefixes[i], ESTC_OBJ_KEY, "n", &addr),
               ESTC_ERR_BAD_ADDRESS);
        ck_assert_ptr_null(addr);
        EXPECT(estc_trust_list(ctx, bad_prefixes[i], collect, &got), ESTC_ERR_BAD_ADDRESS);
    }
    /* exists(): a well-formed address of the other form holds nothing of
     * that kind; a malformed one is an error. */
    found = true;
    OK(estc_object_exists(ctx, "psa:key-id=0x10001", ESTC_OBJ_CERT, &found));
    ck_assert(!found);
    found = true;
    OK(estc_object_exists(ctx, "psa:uid=0x20001", ESTC_OBJ_KEY, &found));
    ck_assert(!found);
    EXPECT(estc_object_exists(ctx, "psa:", ESTC_OBJ_KEY, &found), ESTC_ERR_BAD_ADDRESS);
    EXPECT(estc_object_exists(ctx, "psa:key-id=1;uid=2", ESTC_OBJ_KEY, &found),
           ESTC_ERR_BAD_ADDRESS);
    EXPECT(estc_object_exists(ctx, "psa:key-id=0", ESTC_OBJ_KEY, &found), ESTC_ERR_BAD_ADDRESS);
    EXPECT(estc_object_exists(ctx, "psa:key-id-range=1-2", ESTC_OBJ_KEY, &found),
           ESTC_ERR_BAD_ADDRESS);
    estc_buf_free(&cd);
    assert_no_files_left();
}
END_TEST

static void count_folder_warnings(void *arg, estc_log_level level, const char *msg)
{
    if (level == ESTC_LOG_WARNING && strstr(msg, "0700") != NULL)
        (*(int *)arg)++;
}

/* mbed TLS writes key files into the current folder: a folder other users
 * can enter gets a warning (once per context); a private one none. */
START_TEST(open_folder_is_warned)
{
    char home[4096];
    ck_assert_ptr_nonnull(getcwd(home, sizeof(home)));
    int warnings = 0;
    bool found = true;
    OK(estc_ctx_set_log(ctx, ESTC_LOG_WARNING, count_folder_warnings, &warnings));
    OK(estc_object_exists(ctx, "psa:key-id=0x10001", ESTC_OBJ_KEY, &found));
    ck_assert_int_eq(warnings, 0);

    ck_assert_int_eq(mkdir("open", 0755), 0);
    ck_assert_int_eq(chmod("open", 0755), 0);
    ck_assert_int_eq(chdir("open"), 0);
    estc_ctx *other = NULL;
    int other_warnings = 0;
    ck_assert_int_eq(estc_ctx_new(&other), ESTC_OK);
    ck_assert_int_eq(
        estc_ctx_set_log(other, ESTC_LOG_WARNING, count_folder_warnings, &other_warnings), ESTC_OK);
    ck_assert_int_eq(estc_object_exists(other, "psa:key-id=0x10001", ESTC_OBJ_KEY, &found),
                     ESTC_OK);
    ck_assert(!found);
    ck_assert_int_eq(estc_object_exists(other, "psa:uid=0x20001", ESTC_OBJ_CERT, &found), ESTC_OK);
    ck_assert_int_eq(other_warnings, 1);
    estc_ctx_free(other);
    ck_assert_int_eq(chdir(home), 0);
    ck_assert_int_eq(rmdir("open"), 0);
    assert_no_files_left();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("psa");
    TCase *tc = tcase_create("driver");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, generated_key_is_not_exportable);
    tcase_add_loop_test(tc, signatures_verify_with_openssl, 0,
                        (int)(sizeof(sig_cases) / sizeof(sig_cases[0])));
    tcase_add_test(tc, occupied_key_id_is_kept);
    tcase_add_loop_test(tc, pkcs8_import, 0, (int)(sizeof(import_cases) / sizeof(import_cases[0])));
    tcase_add_test(tc, bad_imports_leave_nothing);
    tcase_add_test(tc, certificates_in_its);
    tcase_add_test(tc, keys_and_entries_do_not_mix);
    tcase_add_test(tc, list_finds_exactly_its_range);
    tcase_add_test(tc, derive_is_deterministic_and_in_range);
    tcase_add_test(tc, bad_addresses);
    tcase_add_test(tc, open_folder_is_warned);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
