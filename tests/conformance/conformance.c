/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The engine conformance suite. Each case makes its own context (Check runs
 * every case in a child process), derives its object addresses from the
 * prefix under test, and removes what it created.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <estc/engine.h>

#include "../fixtures/engine_check.h"
#include "conformance.h"

/* The suite's parameters; set once before the runner starts. */
static const char *g_prefix;
static const char *g_driver_path;

static estc_ctx *ctx;

/* Where a case records that it skipped, and why: Check has no "skipped"
 * result, and with CK_FORK the case runs in a child whose memory is lost.
 * One write() per line to a file every child shares (the file offset is
 * shared across fork()); the runner reads it after the cases. */
static int g_skip_fd = -1;

/* Record that case @name (loop @i) could not run what it tests because the
 * engine answered ESTC_ERR_UNSUPPORTED; the case then returns and is
 * reported as SKIP with the engine's detail, never as PASS. */
static void skip_case(const char *name, int i, const char *why)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "%s\t%d\t%s", name, i, why);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line) - 1)
        n = (int)sizeof(line) - 2;
    for (int k = 0; k < n; k++)
        if (line[k] == '\n')
            line[k] = ' ';
    line[n++] = '\n';
    ck_assert_msg(g_skip_fd >= 0 && write(g_skip_fd, line, (size_t)n) == n,
                  "cannot record a skip: %s", why);
}

static void setup(void)
{
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    if (g_driver_path != NULL)
        ck_assert_msg(estc_engine_load_module(ctx, g_driver_path) == ESTC_OK, "%s",
                      estc_ctx_error_detail(ctx));
}

static void teardown(void)
{
    estc_ctx_free(ctx);
    ctx = NULL;
}

static char *derive(estc_obj_kind kind, const char *name)
{
    char *addr = NULL;
    OK(estc_address_derive(ctx, g_prefix, kind, name, &addr));
    return addr;
}

static bool exists(const char *addr, estc_obj_kind kind)
{
    bool found = true;
    OK(estc_object_exists(ctx, addr, kind, &found));
    return found;
}

/* ---- test material made with OpenSSL --------------------------------- */

/* A self-signed certificate with a fresh key; @cn makes it distinct. */
static estc_buf make_cert(const char *cn)
{
    return engine_check_cert(cn, 4711);
}

static bool verify(const estc_buf *spki, estc_sig_alg alg, const uint8_t *digest, size_t dlen,
                   const estc_buf *sig)
{
    const unsigned char *p = spki->data;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spki->len);
    ck_assert_ptr_nonnull(pub);
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
    ck_assert_ptr_nonnull(pctx);
    ck_assert_int_eq(EVP_PKEY_verify_init(pctx), 1);
    ck_assert_int_eq(EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()), 1);
    if (alg == ESTC_SIG_RSA_PKCS1)
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING), 1);
    if (alg == ESTC_SIG_RSA_PSS) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    bool ok = EVP_PKEY_verify(pctx, sig->data, sig->len, digest, dlen) == 1;
    EVP_PKEY_CTX_free(pctx);
    EVP_PKEY_free(pub);
    return ok;
}

/* ---- cases ------------------------------------------------------------ */

static const struct {
    estc_key_type type;
    const char *name;
    int bits;
    bool ec;
} key_types[] = {
    {ESTC_KEY_EC_P256, "ct-key-p256", 256, true},
    {ESTC_KEY_EC_P384, "ct-key-p384", 384, true},
    {ESTC_KEY_RSA_2048, "ct-key-rsa2048", 2048, false},
    {ESTC_KEY_RSA_3072, "ct-key-rsa3072", 3072, false},
};

/* Generate each key type, read the public key, sign, verify with OpenSSL. */
START_TEST(keygen_sign_verify)
{
    char *addr = derive(ESTC_OBJ_KEY, key_types[_i].name);
    estc_err err = estc_key_generate(ctx, addr, key_types[_i].type);
    if (err == ESTC_ERR_UNSUPPORTED && key_types[_i].type != ESTC_KEY_EC_P256) {
        ck_assert(!exists(addr, ESTC_OBJ_KEY));
        /* optional type: the engine says it cannot, cleanly */
        skip_case("keygen_sign_verify", _i, estc_ctx_error_detail(ctx));
        free(addr);
        return;
    }
    ck_assert_msg(err == ESTC_OK, "generate %s: %s (%s)", key_types[_i].name, estc_err_name(err),
                  estc_ctx_error_detail(ctx));
    ck_assert(exists(addr, ESTC_OBJ_KEY));
    /* A second key at the same address is refused. */
    EXPECT(estc_key_generate(ctx, addr, key_types[_i].type), ESTC_ERR_EXISTS);

    estc_buf spki = {0};
    OK(estc_key_public(ctx, addr, &spki));
    const unsigned char *p = spki.data;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spki.len);
    ck_assert_ptr_nonnull(pub);
    ck_assert_int_eq(EVP_PKEY_get_bits(pub), key_types[_i].bits);
    ck_assert_int_eq(EVP_PKEY_is_a(pub, key_types[_i].ec ? "EC" : "RSA"), 1);
    EVP_PKEY_free(pub);

    uint8_t digest[32];
    for (size_t i = 0; i < sizeof(digest); i++)
        digest[i] = (uint8_t)(i * 7 + 1);
    estc_sig_alg algs[2] = {ESTC_SIG_ECDSA, ESTC_SIG_ECDSA};
    if (!key_types[_i].ec) {
        algs[0] = ESTC_SIG_RSA_PKCS1;
        algs[1] = ESTC_SIG_RSA_PSS;
    }
    for (int a = 0; a < 2; a++) {
        estc_buf sig = {0};
        OK(estc_key_sign(ctx, addr, algs[a], ESTC_HASH_SHA256, digest, sizeof(digest), &sig));
        ck_assert_msg(verify(&spki, algs[a], digest, sizeof(digest), &sig),
                      "signature does not verify");
        /* A signature over another digest must not verify. */
        digest[0] ^= 1;
        ck_assert(!verify(&spki, algs[a], digest, sizeof(digest), &sig));
        digest[0] ^= 1;
        estc_buf_free(&sig);
    }
    /* A digest of the wrong length is refused before the engine. */
    estc_buf sig = {0};
    EXPECT(estc_key_sign(ctx, addr, algs[0], ESTC_HASH_SHA384, digest, sizeof(digest), &sig),
           ESTC_ERR_INVALID_ARG);
    ck_assert_ptr_null(sig.data);

    OK(estc_key_remove(ctx, addr));
    ck_assert(!exists(addr, ESTC_OBJ_KEY));
    estc_buf_free(&spki);
    free(addr);
}
END_TEST

START_TEST(sign_with_removed_key_fails)
{
    char *addr = derive(ESTC_OBJ_KEY, "ct-removed");
    OK(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256));
    OK(estc_key_remove(ctx, addr));
    uint8_t digest[32] = {1};
    estc_buf sig = {0};
    EXPECT(estc_key_sign(ctx, addr, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, digest, 32, &sig),
           ESTC_ERR_NOT_FOUND);
    ck_assert_ptr_null(sig.data);
    ck_assert_str_ne(estc_ctx_error_detail(ctx), "");
    estc_buf spki = {0};
    EXPECT(estc_key_public(ctx, addr, &spki), ESTC_ERR_NOT_FOUND);
    free(addr);
}
END_TEST

START_TEST(cert_store_load_exact)
{
    char *addr = derive(ESTC_OBJ_CERT, "ct-cert");
    estc_buf der = make_cert("estc conformance end entity");
    OK(estc_cert_store(ctx, addr, der.data, der.len));
    ck_assert(exists(addr, ESTC_OBJ_CERT));
    estc_buf back = {0};
    OK(estc_cert_load(ctx, addr, &back));
    ck_assert_uint_eq(back.len, der.len);
    ck_assert_mem_eq(back.data, der.data, der.len);
    /* No silent replace, and the stored bytes stay as they were. */
    estc_buf other = make_cert("another");
    EXPECT(estc_cert_store(ctx, addr, other.data, other.len), ESTC_ERR_EXISTS);
    OK(estc_cert_load(ctx, addr, &back));
    ck_assert_mem_eq(back.data, der.data, der.len);
    /* Not a certificate: refused with a format error, nothing stored. */
    char *bad = derive(ESTC_OBJ_CERT, "ct-cert-bad");
    uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x01};
    EXPECT(estc_cert_store(ctx, bad, junk, sizeof(junk)), ESTC_ERR_FORMAT);
    EXPECT(estc_cert_store(ctx, bad, der.data, der.len - 1), ESTC_ERR_FORMAT);
    ck_assert(!exists(bad, ESTC_OBJ_CERT));
    OK(estc_cert_remove(ctx, addr));
    ck_assert(!exists(addr, ESTC_OBJ_CERT));
    EXPECT(estc_cert_load(ctx, addr, &back), ESTC_ERR_NOT_FOUND);
    estc_buf_free(&back);
    estc_buf_free(&der);
    estc_buf_free(&other);
    free(bad);
    free(addr);
}
END_TEST

START_TEST(trust_store_list_remove)
{
    struct collected before = {0}, now = {0};
    OK(estc_trust_list(ctx, g_prefix, collect, &before));
    char *addrs[3];
    estc_buf ders[3];
    for (int i = 0; i < 3; i++) {
        char name[32], cn[32];
        snprintf(name, sizeof(name), "ct-trust-%d", i);
        snprintf(cn, sizeof(cn), "estc conformance CA %d", i);
        addrs[i] = derive(ESTC_OBJ_TRUST, name);
        ders[i] = make_cert(cn);
        OK(estc_trust_store(ctx, addrs[i], ders[i].data, ders[i].len));
    }
    /* An end-entity certificate under the same prefix is not in the list. */
    char *ee = derive(ESTC_OBJ_CERT, "ct-trust-ee");
    estc_buf eed = make_cert("not a CA");
    OK(estc_cert_store(ctx, ee, eed.data, eed.len));

    OK(estc_trust_list(ctx, g_prefix, collect, &now));
    ck_assert_uint_eq(now.n, before.n + 3);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(contains(&now, addrs[i]), "%s not listed", addrs[i]);
    ck_assert(!contains(&now, ee));
    collected_free(&now);

    estc_buf back = {0};
    OK(estc_cert_load(ctx, addrs[1], &back));
    ck_assert_mem_eq(back.data, ders[1].data, ders[1].len);
    estc_buf_free(&back);

    OK(estc_trust_remove(ctx, addrs[1]));
    OK(estc_trust_list(ctx, g_prefix, collect, &now));
    ck_assert_uint_eq(now.n, before.n + 2);
    ck_assert(!contains(&now, addrs[1]));
    collected_free(&now);

    OK(estc_trust_remove(ctx, addrs[0]));
    OK(estc_trust_remove(ctx, addrs[2]));
    OK(estc_cert_remove(ctx, ee));
    OK(estc_trust_list(ctx, g_prefix, collect, &now));
    ck_assert_uint_eq(now.n, before.n);
    collected_free(&now);
    collected_free(&before);
    for (int i = 0; i < 3; i++) {
        free(addrs[i]);
        estc_buf_free(&ders[i]);
    }
    free(ee);
    estc_buf_free(&eed);
}
END_TEST

START_TEST(remove_missing_is_not_found)
{
    char *key = derive(ESTC_OBJ_KEY, "ct-never-key");
    char *cert = derive(ESTC_OBJ_CERT, "ct-never-cert");
    char *trust = derive(ESTC_OBJ_TRUST, "ct-never-trust");
    EXPECT(estc_key_remove(ctx, key), ESTC_ERR_NOT_FOUND);
    EXPECT(estc_cert_remove(ctx, cert), ESTC_ERR_NOT_FOUND);
    EXPECT(estc_trust_remove(ctx, trust), ESTC_ERR_NOT_FOUND);
    estc_buf b = {0};
    EXPECT(estc_cert_load(ctx, cert, &b), ESTC_ERR_NOT_FOUND);
    ck_assert(!exists(key, ESTC_OBJ_KEY));
    ck_assert(!exists(cert, ESTC_OBJ_CERT));
    free(key);
    free(cert);
    free(trust);
}
END_TEST

START_TEST(bad_addresses_are_refused)
{
    char longaddr[ESTC_ADDRESS_MAX + 8];
    snprintf(longaddr, sizeof(longaddr), "%s", g_prefix);
    size_t n = strlen(longaddr);
    memset(longaddr + n, 'a', sizeof(longaddr) - n - 1);
    longaddr[sizeof(longaddr) - 1] = '\0';
    const char *bad[] = {"", "no-scheme", ":x", "9abc:x", "sp ace:x", "tab\t:x", longaddr};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        EXPECT(estc_key_generate(ctx, bad[i], ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
        ck_assert_str_ne(estc_ctx_error_detail(ctx), "");
    }
    EXPECT(estc_key_generate(ctx, "nosuchscheme:x", ESTC_KEY_EC_P256), ESTC_ERR_UNKNOWN_SCHEME);
    EXPECT(estc_key_generate(ctx, NULL, ESTC_KEY_EC_P256), ESTC_ERR_INVALID_ARG);
    EXPECT(estc_key_generate(ctx, g_prefix, (estc_key_type)99), ESTC_ERR_INVALID_ARG);

    /* The scheme alone names no object. */
    const struct estc_driver *drv = NULL;
    OK(estc_engine_find(ctx, g_prefix, &drv));
    char bare[40];
    snprintf(bare, sizeof(bare), "%s:", drv->scheme);
    EXPECT(estc_key_generate(ctx, bare, ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
    estc_buf b = {0};
    EXPECT(estc_key_public(ctx, bare, &b), ESTC_ERR_BAD_ADDRESS);

    /* Names outside the derive alphabet are refused. */
    char *addr = NULL;
    EXPECT(estc_address_derive(ctx, g_prefix, ESTC_OBJ_KEY, "a/b", &addr), ESTC_ERR_INVALID_ARG);
    EXPECT(estc_address_derive(ctx, g_prefix, ESTC_OBJ_KEY, "", &addr), ESTC_ERR_INVALID_ARG);
    ck_assert_ptr_null(addr);
}
END_TEST

/* Number of objects of every listable kind under @prefix; SIZE_MAX when
 * listing fails (checked by the callers). */
static size_t count_objects(const char *prefix)
{
    size_t total = 0;
    for (estc_obj_kind k = ESTC_OBJ_KEY; k <= ESTC_OBJ_TRUST; k++) {
        struct collected c = {0};
        estc_err err = estc_object_list(ctx, prefix, k, collect, &c);
        total += c.n;
        collected_free(&c);
        if (err == ESTC_ERR_UNSUPPORTED && k == ESTC_OBJ_KEY)
            continue;
        if (err != ESTC_OK)
            return SIZE_MAX;
    }
    return total;
}

START_TEST(lifecycle_leaves_nothing)
{
    size_t before = count_objects(g_prefix);
    ck_assert_msg(before != SIZE_MAX, "listing failed: %s", estc_ctx_error_detail(ctx));
    estc_lifecycle *lc = NULL;
    OK(estc_lifecycle_new(ctx, &lc));
    char *k1 = derive(ESTC_OBJ_KEY, "ct-lc-key1");
    char *k2 = derive(ESTC_OBJ_KEY, "ct-lc-key2");
    char *k3 = derive(ESTC_OBJ_KEY, "ct-lc-key3");
    char *c1 = derive(ESTC_OBJ_CERT, "ct-lc-cert1");
    char *t1 = derive(ESTC_OBJ_TRUST, "ct-lc-trust1");
    estc_buf cd = make_cert("lifecycle ee"), td = make_cert("lifecycle ca");

    OK(estc_lifecycle_key_generate(lc, k1, ESTC_KEY_EC_P256));
    OK(estc_lifecycle_cert_store(lc, c1, ESTC_OBJ_CERT, cd.data, cd.len));
    OK(estc_lifecycle_cert_store(lc, t1, ESTC_OBJ_TRUST, td.data, td.len));
    ck_assert_uint_eq(estc_lifecycle_count(lc), 3);
    OK(estc_lifecycle_commit(lc));

    /* A failed creation records nothing and leaves nothing. */
    EXPECT(estc_lifecycle_key_generate(lc, k1, ESTC_KEY_EC_P256), ESTC_ERR_EXISTS);
    ck_assert_uint_eq(estc_lifecycle_count(lc), 3);

    /* Rekey: the new key commits, the old one goes. */
    OK(estc_lifecycle_key_generate(lc, k2, ESTC_KEY_EC_P256));
    OK(estc_lifecycle_supersede(lc, k1));
    OK(estc_lifecycle_commit(lc));
    ck_assert(!exists(k1, ESTC_OBJ_KEY));
    ck_assert(exists(k2, ESTC_OBJ_KEY));

    /* A failed rekey: the pending key goes, the committed one stays. */
    OK(estc_lifecycle_key_generate(lc, k3, ESTC_KEY_EC_P256));
    OK(estc_lifecycle_supersede(lc, k2));
    OK(estc_lifecycle_rollback(lc));
    ck_assert(!exists(k3, ESTC_OBJ_KEY));
    ck_assert(exists(k2, ESTC_OBJ_KEY));

    /* Persisted and unchanged: cleanup keeps the objects. */
    estc_buf rec = {0};
    OK(estc_lifecycle_serialize(lc, &rec));
    OK(estc_lifecycle_cleanup(lc));
    ck_assert(exists(k2, ESTC_OBJ_KEY));
    ck_assert(exists(c1, ESTC_OBJ_CERT));

    /* A restored record (after a crash) purges its pending objects. */
    estc_lifecycle *restored = NULL;
    OK(estc_lifecycle_new(ctx, &restored));
    OK(estc_lifecycle_key_generate(lc, k3, ESTC_KEY_EC_P256));
    estc_buf rec2 = {0};
    OK(estc_lifecycle_serialize(lc, &rec2));
    OK(estc_lifecycle_deserialize(restored, rec2.data, rec2.len));
    ck_assert_uint_eq(estc_lifecycle_count(restored), 4);
    OK(estc_lifecycle_rollback(restored));
    ck_assert(!exists(k3, ESTC_OBJ_KEY));
    ck_assert_uint_eq(estc_lifecycle_count(restored), 3);

    /* Changed since persist: cleanup removes every recorded object. */
    ck_assert(estc_lifecycle_changed(restored));
    OK(estc_lifecycle_cleanup(restored));
    ck_assert_uint_eq(estc_lifecycle_count(restored), 0);
    ck_assert(!exists(k2, ESTC_OBJ_KEY));
    ck_assert(!exists(c1, ESTC_OBJ_CERT));
    ck_assert(!exists(t1, ESTC_OBJ_TRUST));
    ck_assert_uint_eq(count_objects(g_prefix), before);

    estc_lifecycle_free(lc);
    estc_lifecycle_free(restored);
    estc_buf_free(&rec);
    estc_buf_free(&rec2);
    estc_buf_free(&cd);
    estc_buf_free(&td);
    free(k1);
    free(k2);
    free(k3);
    free(c1);
    free(t1);
}
END_TEST

struct gen_arg {
    const estc_buf *want;
    int calls;
    char *addr;
};

static const char *test_generator(void *arg, const void *der, size_t len)
{
    struct gen_arg *g = arg;
    g->calls++;
    if (len != g->want->len || memcmp(der, g->want->data, len) != 0)
        return NULL;
    return g->addr;
}

START_TEST(address_generator_is_used)
{
    estc_buf der = make_cert("generated CA");
    const struct estc_driver *drv = NULL;
    OK(estc_engine_find(ctx, g_prefix, &drv));

    struct gen_arg g = {.want = &der, .addr = derive(ESTC_OBJ_TRUST, "ct-gen-custom")};
    OK(estc_generator_set(ctx, drv->scheme, test_generator, &g));
    char *addr = NULL;
    OK(estc_address_generate(ctx, g_prefix, ESTC_OBJ_TRUST, der.data, der.len, &addr));
    ck_assert_int_eq(g.calls, 1);
    ck_assert_str_eq(addr, g.addr);
    ck_assert_ptr_ne(addr, g.addr); /* copied */
    OK(estc_trust_store(ctx, addr, der.data, der.len));
    ck_assert(exists(g.addr, ESTC_OBJ_TRUST));
    OK(estc_trust_remove(ctx, addr));
    free(addr);

    /* A generator that fails fails the request. */
    estc_buf other = make_cert("other");
    addr = NULL;
    EXPECT(estc_address_generate(ctx, g_prefix, ESTC_OBJ_TRUST, other.data, other.len, &addr),
           ESTC_ERR_BAD_ADDRESS);
    ck_assert_ptr_null(addr);

    /* The default is deterministic: the same certificate, the same address. */
    OK(estc_generator_set(ctx, drv->scheme, NULL, NULL));
    char *a1 = NULL, *a2 = NULL, *a3 = NULL;
    OK(estc_address_generate(ctx, g_prefix, ESTC_OBJ_TRUST, der.data, der.len, &a1));
    OK(estc_address_generate(ctx, g_prefix, ESTC_OBJ_TRUST, der.data, der.len, &a2));
    OK(estc_address_generate(ctx, g_prefix, ESTC_OBJ_TRUST, other.data, other.len, &a3));
    ck_assert_str_eq(a1, a2);
    ck_assert_str_ne(a1, a3);
    OK(estc_trust_store(ctx, a1, der.data, der.len));
    OK(estc_trust_remove(ctx, a1));
    free(a1);
    free(a2);
    free(a3);
    free(g.addr);
    estc_buf_free(&der);
    estc_buf_free(&other);
}
END_TEST

START_TEST(key_import_pkcs8)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ck_assert_ptr_nonnull(key);
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    unsigned char *der = NULL;
    int n = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    ck_assert_int_gt(n, 0);
    char *addr = derive(ESTC_OBJ_KEY, "ct-imported");
    estc_err err = estc_key_import(ctx, addr, der, (size_t)n);
    if (err == ESTC_ERR_UNSUPPORTED)
        skip_case("key_import_pkcs8", 0, estc_ctx_error_detail(ctx));
    else {
        ck_assert_msg(err == ESTC_OK, "import: %s (%s)", estc_err_name(err),
                      estc_ctx_error_detail(ctx));
        estc_buf spki = {0};
        OK(estc_key_public(ctx, addr, &spki));
        unsigned char *want = NULL;
        int wn = i2d_PUBKEY(key, &want);
        ck_assert_uint_eq(spki.len, (size_t)wn);
        ck_assert_mem_eq(spki.data, want, spki.len);
        uint8_t digest[32] = {9, 8, 7};
        estc_buf sig = {0};
        OK(estc_key_sign(ctx, addr, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, digest, 32, &sig));
        ck_assert(verify(&spki, ESTC_SIG_ECDSA, digest, 32, &sig));
        OK(estc_key_remove(ctx, addr));
        estc_buf_free(&sig);
        estc_buf_free(&spki);
        OPENSSL_free(want);
        /* Garbage is refused and leaves nothing. */
        uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x00};
        EXPECT(estc_key_import(ctx, addr, junk, sizeof(junk)), ESTC_ERR_FORMAT);
    }
    ck_assert(!exists(addr, ESTC_OBJ_KEY));
    free(addr);
    OPENSSL_clear_free(der, (size_t)n);
    PKCS8_PRIV_KEY_INFO_free(p8);
    EVP_PKEY_free(key);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("conformance");
    struct {
        const char *name;
        const TTest *test;
        int loops;
    } cases[] = {
        {"keygen_sign_verify", keygen_sign_verify, 4},
        {"sign_with_removed_key_fails", sign_with_removed_key_fails, 1},
        {"cert_store_load_exact", cert_store_load_exact, 1},
        {"trust_store_list_remove", trust_store_list_remove, 1},
        {"remove_missing_is_not_found", remove_missing_is_not_found, 1},
        {"bad_addresses_are_refused", bad_addresses_are_refused, 1},
        {"lifecycle_leaves_nothing", lifecycle_leaves_nothing, 1},
        {"address_generator_is_used", address_generator_is_used, 1},
        {"key_import_pkcs8", key_import_pkcs8, 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 120);
        tcase_add_loop_test(tc, cases[i].test, 0, cases[i].loops);
        suite_add_tcase(s, tc);
    }
    return s;
}

static const char *type_names[] = {"p256", "p384", "rsa2048", "rsa3072"};

/* The objects under the prefix, counted in a child process when the cases
 * run in children (@forking): a PKCS#11 module must not be initialized in
 * a process that then forks children that use it (tpm2-pkcs11's D-Bus
 * connection does not survive fork()). Without forking, counted here.
 * SIZE_MAX when counting fails; the detail goes to @why. */
static size_t count_in_child(const char *prefix, const char *driver_path, char *why,
                             size_t why_len, bool forking)
{
    int fds[2];
    snprintf(why, why_len, "cannot count");
    if (!forking) {
        /* CK_FORK=no: the cases run in this process anyway. */
        size_t n = SIZE_MAX;
        if (estc_ctx_new(&ctx) == ESTC_OK &&
            (driver_path == NULL || estc_engine_load_module(ctx, driver_path) == ESTC_OK))
            n = count_objects(prefix);
        snprintf(why, why_len, "%s", ctx != NULL ? estc_ctx_error_detail(ctx) : "");
        estc_ctx_free(ctx);
        ctx = NULL;
        return n;
    }
    if (pipe(fds) != 0)
        return SIZE_MAX;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return SIZE_MAX;
    }
    if (pid == 0) {
        close(fds[0]);
        char msg[400];
        size_t n = SIZE_MAX;
        if (estc_ctx_new(&ctx) == ESTC_OK &&
            (driver_path == NULL || estc_engine_load_module(ctx, driver_path) == ESTC_OK))
            n = count_objects(prefix);
        snprintf(msg, sizeof(msg), "%zu %s", n, ctx != NULL ? estc_ctx_error_detail(ctx) : "");
        estc_ctx_free(ctx);
        size_t len = strlen(msg);
        _exit(write(fds[1], msg, len) == (ssize_t)len ? 0 : 1);
    }
    close(fds[1]);
    char msg[401];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(msg) - 1 &&
           ((r = read(fds[0], msg + got, sizeof(msg) - 1 - got)) > 0 || (r < 0 && errno == EINTR)))
        if (r > 0)
            got += (size_t)r;
    msg[got] = '\0';
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    char *end = NULL;
    unsigned long long v = strtoull(msg, &end, 10);
    if (got == 0 || end == msg || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return SIZE_MAX;
    snprintf(why, why_len, "%s", *end == ' ' ? end + 1 : end);
    return v >= SIZE_MAX ? SIZE_MAX : (size_t)v;
}

/* The reason recorded for case @tcname (its @loop-th run), or NULL. */
static const char *skip_reason(char *skips, const char *tcname, int loop)
{
    size_t nlen = strlen(tcname);
    for (char *line = skips; line != NULL && *line != '\0';) {
        char *next = strchr(line, '\n');
        if (strncmp(line, tcname, nlen) == 0 && line[nlen] == '\t' &&
            atoi(line + nlen + 1) == loop) {
            const char *why = strchr(line + nlen + 1, '\t');
            if (why != NULL) {
                static char buf[512];
                size_t len = next != NULL ? (size_t)(next - why - 1) : strlen(why + 1);
                if (len >= sizeof(buf))
                    len = sizeof(buf) - 1;
                memcpy(buf, why + 1, len);
                buf[len] = '\0';
                return buf;
            }
        }
        line = next != NULL ? next + 1 : NULL;
    }
    return NULL;
}

/* Everything recorded by skip_case(), as one string (empty when none). */
static char *read_skips(FILE *f)
{
    long len = 0;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0)
        len = 0;
    char *s = malloc((size_t)len + 1);
    if (s == NULL)
        return NULL;
    size_t n = len > 0 ? fread(s, 1, (size_t)len, f) : 0;
    s[n] = '\0';
    return s;
}

int estc_conformance_run(const char *prefix, const char *driver_path, FILE *out)
{
    g_prefix = prefix;
    g_driver_path = driver_path;

    /* The prefix must reach a driver before anything runs (no object is
     * touched, no module loaded: finding the driver parses the scheme). */
    estc_ctx *probe = NULL;
    if (estc_ctx_new(&probe) != ESTC_OK)
        return -1;
    const struct estc_driver *drv = NULL;
    estc_err err = ESTC_OK;
    if (driver_path != NULL)
        err = estc_engine_load_module(probe, driver_path);
    if (err == ESTC_OK)
        err = estc_engine_find(probe, prefix, &drv);
    if (err != ESTC_OK) {
        fprintf(out, "cannot start: %s: %s\n", estc_strerror(err), estc_ctx_error_detail(probe));
        estc_ctx_free(probe);
        return -1;
    }
    fprintf(out, "engine \"%s\": %s\n", drv->scheme, drv->description);
    estc_ctx_free(probe);

    SRunner *sr = srunner_create(make_suite());
    srunner_set_log(sr, NULL);
    bool forking = srunner_fork_status(sr) != CK_NOFORK;
    char why_before[400], why_after[400];
    size_t before = count_in_child(prefix, driver_path, why_before, sizeof(why_before), forking);

    FILE *skips_file = tmpfile();
    if (skips_file == NULL) {
        fprintf(out, "cannot start: no temporary file for the skip records\n");
        srunner_free(sr);
        return -1;
    }
    g_skip_fd = fileno(skips_file);
    fflush(out);
    srunner_run_all(sr, CK_SILENT);
    char *skips = read_skips(skips_file);
    g_skip_fd = -1;
    fclose(skips_file);
    int n = srunner_ntests_run(sr);
    TestResult **results = srunner_results(sr);
    int passed = 0, skipped = 0, failed = 0, keygen_loop = 0;
    for (int i = 0; i < n; i++) {
        TestResult *r = results[i];
        const char *name = tr_tcname(r);
        char label[96];
        int loop = 0;
        if (strcmp(name, "keygen_sign_verify") == 0) {
            loop = keygen_loop++ % 4;
            snprintf(label, sizeof(label), "%s[%s]", name, type_names[loop]);
        } else {
            snprintf(label, sizeof(label), "%s", name);
        }
        const char *why = skip_reason(skips, name, loop);
        if (tr_rtype(r) == CK_PASS && why != NULL) {
            skipped++;
            fprintf(out, "SKIP %s: not supported: %s\n", label, why);
        } else if (tr_rtype(r) == CK_PASS) {
            passed++;
            fprintf(out, "PASS %s\n", label);
        } else {
            failed++;
            fprintf(out, "FAIL %s: %s\n", label, tr_msg(r));
        }
    }
    free(skips);
    free(results);
    srunner_free(sr);

    /* Whatever the cases did, nothing of theirs may remain. */
    size_t after = count_in_child(prefix, driver_path, why_after, sizeof(why_after), forking);
    if (before != SIZE_MAX && after == before) {
        passed++;
        fprintf(out, "PASS no_objects_left_behind (%zu before and after)\n", before);
    } else {
        failed++;
        fprintf(out, "FAIL no_objects_left_behind: %zu objects before, %zu after (%s)\n", before,
                after, before == SIZE_MAX ? why_before : why_after);
    }
    fprintf(out, "%d passed, %d skipped, %d failed\n", passed, skipped, failed);
    return failed;
}
