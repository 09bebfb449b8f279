/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PKCS#11 driver tests against real SoftHSM2 tokens (see run-tests.sh): key
 * attributes read back natively, wrong PINs, purges counted on the token, two
 * tokens and two module loads in one process, fork(), re-login, module
 * selection, RSA signatures, listing and error paths.
 *
 * Environment: ESTC_P11_MODULE (module path), ESTC_P11_TOKEN1 and
 * ESTC_P11_TOKEN2 (labels of two fresh tokens, user PIN 1234).
 *
 * Helper modes for the shell script (no Check):
 *   pkcs11-test --make-key ADDR     create a P-256 key pair and leave it
 *   pkcs11-test --remove-key ADDR   remove it again
 */
#include <estc/engine.h>

#include <check.h>
#include <p11-kit/p11-kit.h>

#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *module_path;
static const char *token1;
static const char *token2;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static char *addr_for(const char *token, const char *object, const char *pin)
{
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "pkcs11:token=%s;object=%s;pin-value=%s?module-path=%s", token,
             object, pin, module_path);
    return b;
}

static estc_ctx *new_ctx(void)
{
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    return ctx;
}

/* A direct PKCS#11 connection to a token, logged in, to check what the
 * driver did from the outside. */
struct native {
    CK_FUNCTION_LIST *fn;
    CK_SESSION_HANDLE s;
    CK_SLOT_ID slot;
    CK_TOKEN_INFO info;
};

static void native_open(struct native *n, const char *label)
{
    n->fn = p11_kit_module_load(module_path, 0);
    ck_assert_ptr_nonnull(n->fn);
    ck_assert_int_eq(p11_kit_module_initialize(n->fn), CKR_OK);
    CK_SLOT_ID slots[16];
    CK_ULONG ns = 16;
    ck_assert_int_eq(n->fn->C_GetSlotList(CK_TRUE, slots, &ns), CKR_OK);
    bool found = false;
    for (CK_ULONG i = 0; i < ns && !found; i++) {
        CK_TOKEN_INFO ti;
        if (n->fn->C_GetTokenInfo(slots[i], &ti) != CKR_OK) {
            /* A token deleted behind the module's back (test_token_reinitialized). */
            continue;
        }
        size_t len = strlen(label);
        if (memcmp(ti.label, label, len) == 0 && (len == 32 || ti.label[len] == ' ')) {
            n->slot = slots[i];
            n->info = ti;
            ck_assert_int_eq(n->fn->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION,
                                                  NULL, NULL, &n->s),
                             CKR_OK);
            found = true;
        }
    }
    ck_assert(found);
    CK_RV rv = n->fn->C_Login(n->s, CKU_USER, (CK_UTF8CHAR *)"1234", 4);
    ck_assert(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
}

static void native_close(struct native *n)
{
    n->fn->C_CloseSession(n->s);
    p11_kit_module_finalize(n->fn);
    p11_kit_module_release(n->fn);
}

/* Objects of @cls (or every object when @cls is -1) labelled @label (or any). */
static CK_ULONG native_find(struct native *n, long cls, const char *label, CK_OBJECT_HANDLE *out,
                            CK_ULONG max)
{
    CK_OBJECT_CLASS c = (CK_OBJECT_CLASS)cls;
    CK_ATTRIBUTE t[2];
    CK_ULONG nt = 0, found = 0;
    CK_OBJECT_HANDLE dummy[64];
    if (cls >= 0) {
        t[nt++] = (CK_ATTRIBUTE){CKA_CLASS, &c, sizeof(c)};
    }
    if (label != NULL) {
        t[nt++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, strlen(label)};
    }
    if (out == NULL) {
        out = dummy;
        max = 64;
    }
    ck_assert_int_eq(n->fn->C_FindObjectsInit(n->s, t, nt), CKR_OK);
    ck_assert_int_eq(n->fn->C_FindObjects(n->s, out, max, &found), CKR_OK);
    ck_assert_int_eq(n->fn->C_FindObjectsFinal(n->s), CKR_OK);
    return found;
}

/* The objects on token @label as another process sees them (OpenSC's
 * pkcs11-tool): this process's module keeps its own view of a token that
 * was deleted and made again. */
static CK_ULONG count_objects_outside(const char *label)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "pkcs11-tool --module %s --token-label %s --login --pin 1234 --list-objects "
             "2>/dev/null | grep -cE '^(Private Key|Public Key|Certificate|Data) Object'",
             module_path, label);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    unsigned long n = 0;
    ck_assert_int_eq(fscanf(f, "%lu", &n), 1);
    pclose(f);
    return n;
}

static CK_ULONG count_objects(const char *label)
{
    struct native n;
    native_open(&n, label);
    CK_ULONG c = native_find(&n, -1, NULL, NULL, 0);
    native_close(&n);
    return c;
}

static CK_BBOOL native_bool(struct native *n, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type)
{
    CK_BBOOL b = 0xff;
    CK_ATTRIBUTE a = {type, &b, sizeof(b)};
    ck_assert_int_eq(n->fn->C_GetAttributeValue(n->s, h, &a, 1), CKR_OK);
    return b;
}

static size_t native_bytes(struct native *n, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                           uint8_t *buf, size_t max)
{
    CK_ATTRIBUTE a = {type, buf, max};
    ck_assert_int_eq(n->fn->C_GetAttributeValue(n->s, h, &a, 1), CKR_OK);
    return a.ulValueLen;
}

/* A self-signed P-256 certificate with common name @cn, as DER. */
static void make_cert(const char *cn, long serial, estc_buf *der)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ck_assert_ptr_nonnull(k);
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(X509_set_version(x, 2), 1);
    ck_assert_int_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
    X509_NAME *name = X509_get_subject_name(x);
    ck_assert_int_eq(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
        1);
    ck_assert_int_eq(X509_set_issuer_name(x, name), 1);
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    ck_assert_int_eq(X509_set_pubkey(x, k), 1);
    ck_assert_int_gt(X509_sign(x, k, EVP_sha256()), 0);
    uint8_t *p = NULL;
    int len = i2d_X509(x, &p);
    ck_assert_int_gt(len, 0);
    ck_assert_int_eq(estc_buf_set(der, p, (size_t)len), ESTC_OK);
    OPENSSL_free(p);
    X509_free(x);
    EVP_PKEY_free(k);
}

static void digest_of(const char *md, const char *msg, uint8_t *out, size_t *len)
{
    unsigned int n = 0;
    ck_assert_int_eq(EVP_Digest(msg, strlen(msg), out, &n, EVP_get_digestbyname(md), NULL), 1);
    *len = n;
}

/* Sign a digest at @addr and verify the signature with its public key. */
static void sign_verify(estc_ctx *ctx, const char *addr, estc_sig_alg alg, estc_hash hash)
{
    static const char *const mds[] = {"", "SHA256", "SHA384", "SHA512"};
    uint8_t dg[64];
    size_t dlen = 0;
    digest_of(mds[hash], "to be signed", dg, &dlen);
    estc_buf sig = {0}, spki = {0};
    ck_assert_msg(estc_key_sign(ctx, addr, alg, hash, dg, dlen, &sig) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_int_eq(estc_key_public(ctx, addr, &spki), ESTC_OK);
    const unsigned char *p = spki.data;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)spki.len);
    ck_assert_ptr_nonnull(pk);
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(pk, NULL);
    ck_assert_ptr_nonnull(pc);
    ck_assert_int_eq(EVP_PKEY_verify_init(pc), 1);
    if (alg != ESTC_SIG_ECDSA) {
        ck_assert_int_eq(EVP_PKEY_CTX_set_signature_md(pc, EVP_get_digestbyname(mds[hash])), 1);
        ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_padding(pc, alg == ESTC_SIG_RSA_PSS
                                                              ? RSA_PKCS1_PSS_PADDING
                                                              : RSA_PKCS1_PADDING),
                         1);
        if (alg == ESTC_SIG_RSA_PSS) {
            ck_assert_int_eq(EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST), 1);
        }
    }
    ck_assert_int_eq(EVP_PKEY_verify(pc, sig.data, sig.len, dg, dlen), 1);
    EVP_PKEY_CTX_free(pc);
    EVP_PKEY_free(pk);
    estc_buf_free(&sig);
    estc_buf_free(&spki);
}

/* Run a command (SoftHSM2's and OpenSC's tools: another process on the
 * same token); its output is discarded. */
static void run_tool(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run_tool(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof(cmd) - 20, fmt, ap);
    va_end(ap);
    ck_assert(n > 0 && (size_t)n < sizeof(cmd) - 20);
    strcat(cmd, " >/dev/null 2>&1");
    ck_assert_msg(system(cmd) == 0, "%s", cmd);
}

/* The SubjectPublicKeyInfo of the key at @addr, as estc reads it. */
static EVP_PKEY *public_of(estc_ctx *ctx, const char *addr)
{
    estc_buf spki = {0};
    ck_assert_msg(estc_key_public(ctx, addr, &spki) == ESTC_OK, "%s", estc_ctx_error_detail(ctx));
    const unsigned char *p = spki.data;
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)spki.len);
    estc_buf_free(&spki);
    ck_assert_ptr_nonnull(pk);
    return pk;
}

/* Whether an ECDSA signature over SHA-256 of "to be signed" made at @addr
 * verifies with @pk (no Check assertion: usable in a child). */
static bool signs_as(estc_ctx *ctx, const char *addr, EVP_PKEY *pk)
{
    uint8_t dg[32];
    unsigned dlen = 0;
    estc_buf sig = {0};
    if (EVP_Digest("to be signed", 12, dg, &dlen, EVP_sha256(), NULL) != 1 ||
        estc_key_sign(ctx, addr, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig) != ESTC_OK) {
        fprintf(stderr, "sign: %s\n", estc_ctx_error_detail(ctx));
        return false;
    }
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(pk, NULL);
    bool ok = pc != NULL && EVP_PKEY_verify_init(pc) == 1 &&
              EVP_PKEY_verify(pc, sig.data, sig.len, dg, 32) == 1;
    EVP_PKEY_CTX_free(pc);
    estc_buf_free(&sig);
    return ok;
}

static bool count_cb(void *arg, const char *addr, estc_obj_kind kind)
{
    (void)addr;
    (void)kind;
    (*(int *)arg)++;
    return true;
}

static int list_count(estc_ctx *ctx, const char *prefix, estc_obj_kind kind)
{
    int n = 0;
    ck_assert_msg(estc_object_list(ctx, prefix, kind, count_cb, &n) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    return n;
}

static void assert_private_key_protected(struct native *n, const char *label)
{
    CK_OBJECT_HANDLE h[2], hp[2];
    ck_assert_uint_eq(native_find(n, CKO_PRIVATE_KEY, label, h, 2), 1);
    ck_assert_uint_eq(native_find(n, CKO_PUBLIC_KEY, label, hp, 2), 1);
    ck_assert_int_eq(native_bool(n, h[0], CKA_SENSITIVE), CK_TRUE);
    ck_assert_int_eq(native_bool(n, h[0], CKA_EXTRACTABLE), CK_FALSE);
    ck_assert_int_eq(native_bool(n, h[0], CKA_TOKEN), CK_TRUE);
    ck_assert_int_eq(native_bool(n, h[0], CKA_PRIVATE), CK_TRUE);
    ck_assert_int_eq(native_bool(n, h[0], CKA_SIGN), CK_TRUE);
    ck_assert_int_eq(native_bool(n, h[0], CKA_DECRYPT), CK_FALSE);
    ck_assert_int_eq(native_bool(n, h[0], CKA_DERIVE), CK_FALSE);
    ck_assert_int_eq(native_bool(n, hp[0], CKA_TOKEN), CK_TRUE);
    /* Private key and public key share their CKA_ID. */
    uint8_t id1[64], id2[64];
    size_t l1 = native_bytes(n, h[0], CKA_ID, id1, sizeof(id1));
    size_t l2 = native_bytes(n, hp[0], CKA_ID, id2, sizeof(id2));
    ck_assert_uint_gt(l1, 0);
    ck_assert_uint_eq(l1, l2);
    ck_assert_mem_eq(id1, id2, l1);
    /* The private value cannot be read. */
    uint8_t val[1024];
    CK_ULONG kt = 0;
    CK_ATTRIBUTE t = {CKA_KEY_TYPE, &kt, sizeof(kt)};
    ck_assert_int_eq(n->fn->C_GetAttributeValue(n->s, h[0], &t, 1), CKR_OK);
    CK_ATTRIBUTE a = {kt == CKK_EC ? CKA_VALUE : CKA_PRIVATE_EXPONENT, val, sizeof(val)};
    ck_assert_int_eq(n->fn->C_GetAttributeValue(n->s, h[0], &a, 1), CKR_ATTRIBUTE_SENSITIVE);
    if (kt == CKK_RSA) {
        CK_ATTRIBUTE b = {CKA_PRIME_1, val, sizeof(val)};
        ck_assert_int_eq(n->fn->C_GetAttributeValue(n->s, h[0], &b, 1), CKR_ATTRIBUTE_SENSITIVE);
    }
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

START_TEST(test_key_attributes)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    const char *a = addr_for(token1, "attr-ec", "1234");
    const char *b = addr_for(token1, "attr-rsa", "1234");
    const char *c = addr_for(token1, "attr-imported", "1234");
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_key_generate(ctx, b, ESTC_KEY_RSA_2048), ESTC_OK);

    /* An imported PKCS#8 key is just as protected. */
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    ck_assert_ptr_nonnull(k);
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    ck_assert_ptr_nonnull(p8);
    uint8_t *der = NULL;
    int len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    ck_assert_int_gt(len, 0);
    PKCS8_PRIV_KEY_INFO_free(p8);
    ck_assert_int_eq(estc_key_import(ctx, c, der, (size_t)len), ESTC_OK);
    OPENSSL_clear_free(der, (size_t)len);
    EVP_PKEY_free(k);
    sign_verify(ctx, c, ESTC_SIG_ECDSA, ESTC_HASH_SHA384);

    /* And an RSA one; its public key must be the imported one. */
    const char *r = addr_for(token1, "attr-rsa-imported", "1234");
    k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    ck_assert_ptr_nonnull(k);
    p8 = EVP_PKEY2PKCS8(k);
    ck_assert_ptr_nonnull(p8);
    der = NULL;
    len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    ck_assert_int_gt(len, 0);
    PKCS8_PRIV_KEY_INFO_free(p8);
    ck_assert_int_eq(estc_key_import(ctx, r, der, (size_t)len), ESTC_OK);
    OPENSSL_clear_free(der, (size_t)len);
    uint8_t *want = NULL;
    int want_len = i2d_PUBKEY(k, &want);
    ck_assert_int_gt(want_len, 0);
    estc_buf got = {0};
    ck_assert_int_eq(estc_key_public(ctx, r, &got), ESTC_OK);
    ck_assert_uint_eq(got.len, (size_t)want_len);
    ck_assert_mem_eq(got.data, want, got.len);
    OPENSSL_free(want);
    estc_buf_free(&got);
    EVP_PKEY_free(k);
    sign_verify(ctx, r, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA256);

    struct native n;
    native_open(&n, token1);
    assert_private_key_protected(&n, "attr-ec");
    assert_private_key_protected(&n, "attr-rsa");
    assert_private_key_protected(&n, "attr-imported");
    assert_private_key_protected(&n, "attr-rsa-imported");
    native_close(&n);

    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);
    ck_assert_int_eq(estc_key_remove(ctx, b), ESTC_OK);
    ck_assert_int_eq(estc_key_remove(ctx, c), ESTC_OK);
    ck_assert_int_eq(estc_key_remove(ctx, r), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_wrong_pin)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    const char *a = addr_for(token1, "wrong-pin", "98765");
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_ERR_AUTH);
    const char *detail = estc_ctx_error_detail(ctx);
    ck_assert_ptr_nonnull(strstr(detail, "CKR_PIN_INCORRECT"));
    ck_assert_ptr_nonnull(strstr(detail, "C_Login"));
    ck_assert_ptr_null(strstr(detail, "98765"));
    ck_assert_ptr_nonnull(strstr(detail, "token="));

    /* The same through a pin-source file. */
    char dir[] = "/tmp/estc-p11pin.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], src[1024];
    snprintf(path, sizeof(path), "%s/pin", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("55555\n", f);
    fclose(f);
    chmod(path, 0600);
    snprintf(src, sizeof(src), "pkcs11:token=%s;object=wrong-pin?pin-source=file:%s&module-path=%s",
             token1, path, module_path);
    ck_assert_int_eq(estc_key_generate(ctx, src, ESTC_KEY_EC_P256), ESTC_ERR_AUTH);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "CKR_PIN_INCORRECT"));
    ck_assert_ptr_null(strstr(estc_ctx_error_detail(ctx), "55555"));
    unlink(path);
    rmdir(dir);
    /* A missing PIN leaves private keys out of reach. */
    char nopin[1024];
    snprintf(nopin, sizeof(nopin), "pkcs11:token=%s;object=no-pin?module-path=%s", token1,
             module_path);
    ck_assert_int_eq(estc_key_generate(ctx, nopin, ESTC_KEY_EC_P256), ESTC_ERR_AUTH);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "CKR_USER_NOT_LOGGED_IN"));
    estc_ctx_free(ctx);

    /* Without a PIN a key is hidden, not gone: removal must say so and leave
     * both halves (a fresh context, so the token is not logged in). */
    ctx = new_ctx();
    ck_assert_int_eq(estc_key_generate(ctx, addr_for(token1, "no-pin", "1234"), ESTC_KEY_EC_P256),
                     ESTC_OK);
    estc_ctx_free(ctx);
    ctx = new_ctx();
    CK_ULONG with_key = count_objects(token1);
    ck_assert_int_eq(estc_key_remove(ctx, nopin), ESTC_ERR_AUTH);
    uint8_t dg[32] = {0};
    estc_buf sig = {0}, spki = {0};
    ck_assert_int_eq(estc_key_sign(ctx, nopin, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_AUTH);
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx, nopin, ESTC_OBJ_KEY, &found), ESTC_ERR_AUTH);
    /* The public half is public. */
    ck_assert_int_eq(estc_key_public(ctx, nopin, &spki), ESTC_OK);
    estc_buf_free(&spki);
    ck_assert_uint_eq(count_objects(token1), with_key);
    ck_assert_int_eq(estc_key_remove(ctx, addr_for(token1, "no-pin", "1234")), ESTC_OK);

    ck_assert_uint_eq(count_objects(token1), before);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_purge_counts)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    estc_lifecycle *lc = NULL;
    ck_assert_int_eq(estc_lifecycle_new(ctx, &lc), ESTC_OK);
    estc_buf c1 = {0}, c2 = {0};
    make_cert("purge client", 7, &c1);
    make_cert("purge ca", 8, &c2);

    ck_assert_int_eq(
        estc_lifecycle_key_generate(lc, addr_for(token1, "purge-key", "1234"), ESTC_KEY_EC_P256),
        ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_cert_store(lc, addr_for(token1, "purge-cert", "1234"),
                                               ESTC_OBJ_CERT, c1.data, c1.len),
                     ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_cert_store(lc, addr_for(token1, "purge-ca", "1234"),
                                               ESTC_OBJ_TRUST, c2.data, c2.len),
                     ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before + 4);
    ck_assert_int_eq(estc_lifecycle_rollback(lc), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before);

    /* Committed, then cleaned up without a persist: removed as well. */
    ck_assert_int_eq(
        estc_lifecycle_key_generate(lc, addr_for(token1, "purge-key", "1234"), ESTC_KEY_EC_P256),
        ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_cert_store(lc, addr_for(token1, "purge-ca", "1234"),
                                               ESTC_OBJ_TRUST, c2.data, c2.len),
                     ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_commit(lc), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before + 3);
    ck_assert_int_eq(estc_lifecycle_cleanup(lc), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before);

    estc_lifecycle_free(lc);
    estc_buf_free(&c1);
    estc_buf_free(&c2);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_two_tokens)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG b1 = count_objects(token1), b2 = count_objects(token2);
    const char *a1 = addr_for(token1, "twin", "1234");
    /* The second token through p11-kit's registered module: two loads at once. */
    char a2[1024], p2[1024];
    snprintf(a2, sizeof(a2), "pkcs11:token=%s;object=twin;pin-value=1234?module-name=softhsm2",
             token2);
    snprintf(p2, sizeof(p2), "pkcs11:token=%s;pin-value=1234?module-name=softhsm2", token2);
    ck_assert_msg(estc_key_generate(ctx, a1, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_msg(estc_key_generate(ctx, a2, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    estc_buf s1 = {0}, s2 = {0};
    ck_assert_int_eq(estc_key_public(ctx, a1, &s1), ESTC_OK);
    ck_assert_int_eq(estc_key_public(ctx, a2, &s2), ESTC_OK);
    ck_assert(s1.len != s2.len || memcmp(s1.data, s2.data, s1.len) != 0);
    sign_verify(ctx, a1, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    sign_verify(ctx, a2, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    ck_assert_int_eq(list_count(ctx, p2, ESTC_OBJ_KEY), 1);
    ck_assert_uint_eq(count_objects(token1), b1 + 2);
    ck_assert_uint_eq(count_objects(token2), b2 + 2);

    ck_assert_int_eq(estc_key_remove(ctx, a1), ESTC_OK);
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx, a2, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(found);
    sign_verify(ctx, a2, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    ck_assert_int_eq(estc_key_remove(ctx, a2), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), b1);
    ck_assert_uint_eq(count_objects(token2), b2);
    estc_buf_free(&s1);
    estc_buf_free(&s2);
    estc_ctx_free(ctx);
}
END_TEST

/* The driver's debug lines of a child, kept to read after its operations. */
struct fork_log {
    char text[16384];
    size_t len;
};

static void fork_log_line(void *arg, estc_log_level level, const char *msg)
{
    struct fork_log *l = arg;
    (void)level;
    int n = snprintf(l->text + l->len, sizeof(l->text) - l->len, "%s\n", msg);
    if (n > 0 && (size_t)n < sizeof(l->text) - l->len) {
        l->len += (size_t)n;
    }
}

START_TEST(test_fork)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    const char *a = addr_for(token1, "forky", "1234");
    const char *b = addr_for(token1, "forky-child", "1234");
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_OK);
    sign_verify(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    EVP_PKEY *pa = public_of(ctx, a);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* The child uses the parent's context: the driver must notice,
         * initialize the module again and open a session of this process
         * before its first call, so that no operation needs the retry after
         * a session error (which would hide a missing reset). The driver's
         * debug lines tell. */
        static struct fork_log log;
        estc_ctx_set_log(ctx, ESTC_LOG_DEBUG, fork_log_line, &log);
        int rc = signs_as(ctx, a, pa) ? 0 : 1;
        if (rc == 0 && estc_key_generate(ctx, b, ESTC_KEY_EC_P256) != ESTC_OK) {
            fprintf(stderr, "child keygen: %s\n", estc_ctx_error_detail(ctx));
            rc = 2;
        }
        if (rc == 0 && estc_key_remove(ctx, b) != ESTC_OK) {
            rc = 3;
        }
        char initialized[64], opened[64];
        snprintf(initialized, sizeof(initialized), " initialized in process %ld\n", (long)getpid());
        snprintf(opened, sizeof(opened), ": session opened in process %ld\n", (long)getpid());
        if (rc == 0 && strstr(log.text, "session retry") != NULL) {
            fprintf(stderr, "child: after fork a session retry was needed:\n%s", log.text);
            rc = 4;
        }
        if (rc == 0 && strstr(log.text, initialized) == NULL) {
            fprintf(stderr, "child: the module was not initialized in the child:\n%s", log.text);
            rc = 5;
        }
        if (rc == 0 && strstr(log.text, opened) == NULL) {
            fprintf(stderr, "child: the parent's session was used:\n%s", log.text);
            rc = 6;
        }
        estc_ctx_free(ctx);
        _exit(rc);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);

    /* The parent's sessions still work. */
    sign_verify(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before);
    EVP_PKEY_free(pa);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_relogin)
{
    estc_ctx *ctx = new_ctx();
    const char *a = addr_for(token1, "relogin", "1234");
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_OK);
    /* Another user of the module in this process logs the token out. */
    struct native n;
    native_open(&n, token1);
    ck_assert_int_eq(n.fn->C_Logout(n.s), CKR_OK);
    sign_verify(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    native_close(&n);
    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_replaced_behind_our_back)
{
    /* One context signs (and remembers where the key was found), another
     * replaces the key: the first must use the new key, not a stale handle. */
    estc_ctx *c1 = new_ctx(), *c2 = new_ctx();
    const char *a = addr_for(token1, "replaced", "1234");
    ck_assert_int_eq(estc_key_generate(c1, a, ESTC_KEY_EC_P256), ESTC_OK);
    sign_verify(c1, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    estc_buf old = {0}, now = {0};
    ck_assert_int_eq(estc_key_public(c1, a, &old), ESTC_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(estc_key_remove(c2, a), ESTC_OK);
        ck_assert_int_eq(estc_key_generate(c2, a, ESTC_KEY_EC_P256), ESTC_OK);
    }
    ck_assert_int_eq(estc_key_public(c1, a, &now), ESTC_OK);
    ck_assert(old.len != now.len || memcmp(old.data, now.data, old.len) != 0);
    sign_verify(c1, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    ck_assert_int_eq(estc_key_remove(c2, a), ESTC_OK);
    uint8_t dg[32] = {0};
    estc_buf sig = {0};
    ck_assert_int_eq(estc_key_sign(c1, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_NOT_FOUND);
    estc_buf_free(&old);
    estc_buf_free(&now);
    estc_ctx_free(c1);
    estc_ctx_free(c2);
}
END_TEST

START_TEST(test_replaced_by_other_process)
{
    /* The key is signed with (its handle cached), then removed and made
     * again by another process (OpenSC's pkcs11-tool): the next signature
     * must come from the new key, through the retry on the refused handle. */
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    const char *a = addr_for(token1, "xproc", "1234");
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_OK);
    EVP_PKEY *old = public_of(ctx, a);
    ck_assert(signs_as(ctx, a, old));
    ck_assert(signs_as(ctx, a, old));
    ck_assert_uint_eq(count_objects(token1), before + 2);
    for (int i = 0; i < 2; i++) {
        const char *type = i == 0 ? "privkey" : "pubkey";
        run_tool("pkcs11-tool --module %s --token-label %s --login --pin 1234 --delete-object "
                 "--type %s --label xproc",
                 module_path, token1, type);
    }
    ck_assert_uint_eq(count_objects(token1), before);
    run_tool("pkcs11-tool --module %s --token-label %s --login --pin 1234 --keypairgen "
             "--key-type EC:prime256v1 --label xproc --id 0a0b",
             module_path, token1);
    ck_assert_uint_eq(count_objects(token1), before + 2);
    EVP_PKEY *now = public_of(ctx, a);
    ck_assert_int_ne(EVP_PKEY_eq(old, now), 1);
    ck_assert_msg(signs_as(ctx, a, now), "the signature is not the new key's");
    /* Removed by the other process again: not found, nothing left. */
    for (int i = 0; i < 2; i++) {
        run_tool("pkcs11-tool --module %s --token-label %s --login --pin 1234 --delete-object "
                 "--type %s --label xproc",
                 module_path, token1, i == 0 ? "privkey" : "pubkey");
    }
    uint8_t dg[32] = {0};
    estc_buf sig = {0};
    ck_assert_int_eq(estc_key_sign(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_NOT_FOUND);
    ck_assert_uint_eq(count_objects(token1), before);
    EVP_PKEY_free(old);
    EVP_PKEY_free(now);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_token_reinitialized)
{
    /* The token is deleted and initialized again under the same label
     * (softhsm2-util, another process): a token removed and another put in
     * its place. The pooled session and the cached handles belonged to the
     * old token; the context must go on with the new one. */
    estc_ctx *ctx = new_ctx();
    const char *a = addr_for(token2, "reinit", "1234");
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_OK);
    EVP_PKEY *old = public_of(ctx, a);
    ck_assert(signs_as(ctx, a, old));
    run_tool("softhsm2-util --delete-token --token %s", token2);
    run_tool("softhsm2-util --init-token --free --label %s --pin 1234 --so-pin 5678", token2);
    ck_assert_uint_eq(count_objects_outside(token2), 0);
    /* The old key went with the old token. */
    uint8_t dg[32] = {0};
    estc_buf sig = {0};
    estc_err err = estc_key_sign(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig);
    ck_assert_msg(err == ESTC_ERR_NOT_FOUND, "%s: %s", estc_err_name(err),
                  estc_ctx_error_detail(ctx));
    ck_assert_msg(estc_key_generate(ctx, a, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_uint_eq(count_objects_outside(token2), 2);
    EVP_PKEY *now = public_of(ctx, a);
    ck_assert_int_ne(EVP_PKEY_eq(old, now), 1);
    ck_assert(signs_as(ctx, a, now));
    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);
    ck_assert_uint_eq(count_objects_outside(token2), 0);
    EVP_PKEY_free(old);
    EVP_PKEY_free(now);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_rsa_signatures)
{
    estc_ctx *ctx = new_ctx();
    const char *a = addr_for(token1, "rsa-sigs", "1234");
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_RSA_2048), ESTC_OK);
    sign_verify(ctx, a, ESTC_SIG_RSA_PKCS1, ESTC_HASH_SHA256);
    sign_verify(ctx, a, ESTC_SIG_RSA_PKCS1, ESTC_HASH_SHA384);
    sign_verify(ctx, a, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA256);
    sign_verify(ctx, a, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA512);
    /* ECDSA with an RSA key is refused, not attempted. */
    uint8_t dg[32] = {0};
    estc_buf sig = {0};
    ck_assert_int_eq(estc_key_sign(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_UNSUPPORTED);
    ck_assert_ptr_null(sig.data);
    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_certificates)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    const char *k = addr_for(token1, "cert-pair", "1234");
    const char *t = addr_for(token1, "cert-ca", "1234");
    char prefix[1024];
    snprintf(prefix, sizeof(prefix), "pkcs11:token=%s;pin-value=1234?module-path=%s", token1,
             module_path);
    estc_buf ee = {0}, ca = {0}, back = {0};
    make_cert("cert client", 1234567, &ee);
    make_cert("cert ca", 42, &ca);
    ck_assert_int_eq(estc_key_generate(ctx, k, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_cert_store(ctx, k, ee.data, ee.len), ESTC_OK);
    ck_assert_int_eq(estc_trust_store(ctx, t, ca.data, ca.len), ESTC_OK);
    ck_assert_int_eq(estc_cert_store(ctx, k, ee.data, ee.len), ESTC_ERR_EXISTS);
    ck_assert_int_eq(estc_trust_store(ctx, t, ca.data, ca.len), ESTC_ERR_EXISTS);
    ck_assert_uint_eq(count_objects(token1), before + 4);

    ck_assert_int_eq(estc_cert_load(ctx, t, &back), ESTC_OK);
    ck_assert_uint_eq(back.len, ca.len);
    ck_assert_mem_eq(back.data, ca.data, ca.len);

    bool found = true;
    ck_assert_int_eq(estc_object_exists(ctx, t, ESTC_OBJ_TRUST, &found), ESTC_OK);
    ck_assert(found);
    ck_assert_int_eq(estc_object_exists(ctx, t, ESTC_OBJ_CERT, &found), ESTC_OK);
    ck_assert(!found);
    ck_assert_int_eq(estc_object_exists(ctx, k, ESTC_OBJ_CERT, &found), ESTC_OK);
    ck_assert(found);
    ck_assert_int_eq(list_count(ctx, prefix, ESTC_OBJ_TRUST), 1);
    ck_assert_int_eq(list_count(ctx, prefix, ESTC_OBJ_CERT), 1);

    /* The attributes other PKCS#11 users rely on. */
    struct native n;
    native_open(&n, token1);
    CK_OBJECT_HANDLE hc[2], hk[2];
    ck_assert_uint_eq(native_find(&n, CKO_CERTIFICATE, "cert-pair", hc, 2), 1);
    ck_assert_uint_eq(native_find(&n, CKO_PRIVATE_KEY, "cert-pair", hk, 2), 1);
    uint8_t b1[2048], b2[2048];
    size_t l1 = native_bytes(&n, hc[0], CKA_ID, b1, sizeof(b1));
    size_t l2 = native_bytes(&n, hk[0], CKA_ID, b2, sizeof(b2));
    ck_assert_uint_eq(l1, l2);
    ck_assert_mem_eq(b1, b2, l1);
    const unsigned char *p = ee.data;
    X509 *x = d2i_X509(NULL, &p, (long)ee.len);
    ck_assert_ptr_nonnull(x);
    uint8_t *d = NULL;
    int dl = i2d_X509_NAME(X509_get_subject_name(x), &d);
    l1 = native_bytes(&n, hc[0], CKA_SUBJECT, b1, sizeof(b1));
    ck_assert_uint_eq(l1, (size_t)dl);
    ck_assert_mem_eq(b1, d, l1);
    OPENSSL_free(d);
    d = NULL;
    dl = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &d);
    l1 = native_bytes(&n, hc[0], CKA_SERIAL_NUMBER, b1, sizeof(b1));
    ck_assert_uint_eq(l1, (size_t)dl);
    ck_assert_mem_eq(b1, d, l1);
    OPENSSL_free(d);
    X509_free(x);
    native_close(&n);

    /* A certificate removal leaves the key alone. */
    ck_assert_int_eq(estc_cert_remove(ctx, k), ESTC_OK);
    ck_assert_int_eq(estc_cert_remove(ctx, k), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_object_exists(ctx, k, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(found);
    ck_assert_int_eq(estc_trust_remove(ctx, t), ESTC_OK);
    ck_assert_int_eq(estc_key_remove(ctx, k), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before);
    estc_buf_free(&ee);
    estc_buf_free(&ca);
    estc_buf_free(&back);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_list_and_derive)
{
    estc_ctx *ctx = new_ctx();
    char prefix[1024], narrow[1024];
    snprintf(prefix, sizeof(prefix), "pkcs11:token=%s;pin-value=1234?module-path=%s", token1,
             module_path);
    snprintf(narrow, sizeof(narrow), "pkcs11:token=%s;object=estc-;pin-value=1234?module-path=%s",
             token1, module_path);
    int all0 = list_count(ctx, prefix, ESTC_OBJ_KEY);
    const char *names[] = {"estc-a", "estc-b", "other"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(
            estc_key_generate(ctx, addr_for(token1, names[i], "1234"), ESTC_KEY_EC_P256), ESTC_OK);
    }
    ck_assert_int_eq(list_count(ctx, prefix, ESTC_OBJ_KEY), all0 + 3);
    ck_assert_int_eq(list_count(ctx, narrow, ESTC_OBJ_KEY), 2);

    char *d = NULL;
    ck_assert_int_eq(estc_address_derive(ctx, narrow, ESTC_OBJ_KEY, "a", &d), ESTC_OK);
    char want[1024];
    snprintf(want, sizeof(want), "pkcs11:token=%s;pin-value=1234;object=estc-a?module-path=%s",
             token1, module_path);
    ck_assert_str_eq(d, want);
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx, d, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(found);
    free(d);
    ck_assert_int_eq(estc_address_derive(ctx,
                                         "pkcs11:token=T;object=x;id=%01;type=cert;pin-value=1?"
                                         "module-path=/m.so",
                                         ESTC_OBJ_KEY, "n_1", &d),
                     ESTC_OK);
    ck_assert_str_eq(d, "pkcs11:token=T;pin-value=1;object=xn_1?module-path=/m.so");
    free(d);
    /* Values that need percent-encoding come out encoded, the same way each time. */
    ck_assert_int_eq(estc_address_derive(ctx,
                                         "pkcs11:token=A%20B%3Bc;object=d%3F-?"
                                         "pin-source=file:/p%26q&module-path=/m.so",
                                         ESTC_OBJ_CERT, "n", &d),
                     ESTC_OK);
    ck_assert_str_eq(d, "pkcs11:token=A%20B%3Bc;object=d%3F-n?pin-source=file:/p%26q&"
                        "module-path=/m.so");
    free(d);

    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(estc_key_remove(ctx, addr_for(token1, names[i], "1234")), ESTC_OK);
    }
    ck_assert_int_eq(list_count(ctx, prefix, ESTC_OBJ_KEY), all0);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_module_selection)
{
    estc_ctx *ctx = new_ctx();
    char a[1024];
    /* PKCS11_MODULE_PATH when the address names no module. */
    ck_assert_int_eq(setenv("PKCS11_MODULE_PATH", module_path, 1), 0);
    snprintf(a, sizeof(a), "pkcs11:token=%s;object=by-env;pin-value=1234", token1);
    ck_assert_msg(estc_key_generate(ctx, a, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    sign_verify(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);
    ck_assert_int_eq(unsetenv("PKCS11_MODULE_PATH"), 0);
    estc_ctx_free(ctx);

    /* p11-kit's registered modules when nothing names one. */
    ctx = new_ctx();
    snprintf(a, sizeof(a), "pkcs11:token=%s;object=by-registry;pin-value=1234", token1);
    ck_assert_msg(estc_key_generate(ctx, a, ESTC_KEY_EC_P384) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    sign_verify(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA384);
    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);

    /* pin-source, and selection by serial and manufacturer. */
    char dir[] = "/tmp/estc-p11pin.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/pin", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("1234\n", f);
    fclose(f);
    chmod(path, 0600);
    snprintf(a, sizeof(a),
             "pkcs11:manufacturer=SoftHSM%%20project;token=%s;object=by-source?pin-source=%s&"
             "module-path=%s",
             token1, path, module_path);
    ck_assert_msg(estc_key_generate(ctx, a, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);
    unlink(path);
    rmdir(dir);

    /* Selection by serial, model and slot-id alone (no label). */
    struct native n;
    native_open(&n, token1);
    char serial[17], model[17];
    memcpy(serial, n.info.serialNumber, 16);
    memcpy(model, n.info.model, 16);
    serial[16] = model[16] = '\0';
    for (int i = 15; i >= 0 && serial[i] == ' '; i--) {
        serial[i] = '\0';
    }
    for (int i = 15; i >= 0 && model[i] == ' '; i--) {
        model[i] = '\0';
    }
    unsigned long slot = (unsigned long)n.slot;
    native_close(&n);
    char model_enc[64];
    size_t o = 0;
    for (const char *c = model; *c != '\0' && o + 4 < sizeof(model_enc); c++) {
        o += (size_t)snprintf(model_enc + o, sizeof(model_enc) - o, *c == ' ' ? "%%20" : "%c", *c);
    }
    snprintf(a, sizeof(a),
             "pkcs11:serial=%s;model=%s;object=by-serial;pin-value=1234?module-path=%s", serial,
             model_enc, module_path);
    ck_assert_msg(estc_key_generate(ctx, a, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    char b[1024];
    snprintf(b, sizeof(b), "pkcs11:slot-id=%lu;object=by-serial;pin-value=1234?module-path=%s",
             slot, module_path);
    bool found = false;
    ck_assert_msg(estc_object_exists(ctx, b, ESTC_OBJ_KEY, &found) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert(found);
    ck_assert_int_eq(estc_key_remove(ctx, b), ESTC_OK);
    ck_assert_int_eq(estc_object_exists(ctx, a, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found);
    estc_ctx_free(ctx);
}
END_TEST

/* pin-source names a file under the one rule for secrets: a regular file,
 * not a symbolic link, no access for others, not writable by its group. A
 * file that breaks it is refused before any login, with ESTC_ERR_AUTH and a
 * detail naming the file and the rule (never the PIN), and nothing is made
 * on the token. A FIFO is refused without waiting for a writer: the alarm
 * fails the test if the read blocks. */
START_TEST(test_pin_source_refused)
{
    alarm(30);
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    char dir[] = "/tmp/estc-p11pin.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char good[256], bad[256], link[256], fifo[256], a[1024];
    snprintf(good, sizeof(good), "%s/pin-0600", dir);
    FILE *f = fopen(good, "w");
    ck_assert_ptr_nonnull(f);
    fputs("1234\n", f);
    fclose(f);
    ck_assert_int_eq(chmod(good, 0600), 0);
    snprintf(link, sizeof(link), "%s/pin-link", dir);
    ck_assert_int_eq(symlink(good, link), 0);
    snprintf(fifo, sizeof(fifo), "%s/pin-fifo", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    snprintf(bad, sizeof(bad), "%s/pin-bad", dir);
    f = fopen(bad, "w");
    ck_assert_ptr_nonnull(f);
    fputs("1234\n", f);
    fclose(f);

    static const struct {
        int mode;  /* of the file "pin-bad", or -1 */
        int which; /* 0: pin-bad, 1: the symbolic link, 2: the FIFO */
        const char *rule;
    } cases[] = {
        {0644, 0, "is open to others (mode 0644)"},
        {0604, 0, "is open to others (mode 0604)"},
        {0620, 0, "is writable by its group (mode 0620)"},
        {-1, 1, "is a symbolic link"},
        {-1, 2, "is not a regular file (a FIFO)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *path = cases[i].which == 0 ? bad : cases[i].which == 1 ? link : fifo;
        if (cases[i].mode >= 0) {
            ck_assert_int_eq(chmod(bad, (mode_t)cases[i].mode), 0);
        }
        snprintf(a, sizeof(a),
                 "pkcs11:token=%s;object=bad-pin-file?pin-source=file:%s&module-path=%s", token1,
                 path, module_path);
        estc_err err = estc_key_generate(ctx, a, ESTC_KEY_EC_P256);
        const char *detail = estc_ctx_error_detail(ctx);
        ck_assert_msg(err == ESTC_ERR_AUTH, "%s: %s: %s", cases[i].rule, estc_err_name(err),
                      detail);
        ck_assert_msg(strstr(detail, "pin-source") != NULL && strstr(detail, path) != NULL &&
                          strstr(detail, cases[i].rule) != NULL,
                      "want \"%s\": %s", cases[i].rule, detail);
        ck_assert_ptr_null(strstr(detail, "1234"));
        ck_assert_uint_eq(count_objects(token1), before);
    }
    /* The same PIN in a 0600 file and a 0640 file works (so the refusals
     * above were the file's, not the PIN's). */
    snprintf(a, sizeof(a), "pkcs11:token=%s;object=good-pin-file?pin-source=%s&module-path=%s",
             token1, good, module_path);
    ck_assert_msg(estc_key_generate(ctx, a, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_uint_eq(count_objects(token1), before + 2);
    ck_assert_int_eq(chmod(good, 0640), 0);
    estc_ctx_free(ctx);
    ctx = new_ctx(); /* a new login, with the 0640 file */
    ck_assert_msg(estc_key_remove(ctx, a) == ESTC_OK, "%s", estc_ctx_error_detail(ctx));
    ck_assert_uint_eq(count_objects(token1), before);
    estc_ctx_free(ctx);
    unlink(good);
    unlink(bad);
    unlink(link);
    unlink(fifo);
    rmdir(dir);
    alarm(0);
}
END_TEST

/* A label longer than the driver's handle cache holds: the handles found
 * and created are still checked against it, and the key works and goes. */
START_TEST(test_long_label)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    char label[201];
    memset(label, 'L', sizeof(label) - 1);
    label[sizeof(label) - 1] = '\0';
    const char *a = addr_for(token1, label, "1234");
    ck_assert_msg(estc_key_generate(ctx, a, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    sign_verify(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256);
    ck_assert_msg(estc_key_remove(ctx, a) == ESTC_OK, "%s", estc_ctx_error_detail(ctx));
    ck_assert_uint_eq(count_objects(token1), before);
    estc_ctx_free(ctx);
}
END_TEST

/* x-init-reserved reaches C_Initialize as pReserved: SoftHSM2 refuses any
 * pReserved with CKR_ARGUMENTS_BAD. A module-name or no module at all with
 * it is a bad address; the same module without it still works. */
START_TEST(test_init_reserved)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    char a[1024];
    snprintf(a, sizeof(a),
             "pkcs11:token=%s;object=init-args;pin-value=1234?module-path=%s&"
             "x-init-reserved=configdir%%3D%%27sql%%3A%%2Ftmp%%27",
             token1, module_path);
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_ERR_ENGINE);
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), "C_Initialize: CKR_ARGUMENTS_BAD") != NULL,
                  "%s", estc_ctx_error_detail(ctx));
    snprintf(a, sizeof(a),
             "pkcs11:token=%s;object=init-args;pin-value=1234?module-name=softhsm2&"
             "x-init-reserved=x",
             token1);
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
    snprintf(a, sizeof(a), "pkcs11:token=%s;object=init-args;pin-value=1234?x-init-reserved=x",
             token1);
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
    ck_assert_str_ne(estc_ctx_error_detail(ctx), "");
    const char *ok = addr_for(token1, "init-args", "1234");
    ck_assert_msg(estc_key_generate(ctx, ok, ESTC_KEY_EC_P256) == ESTC_OK, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_int_eq(estc_key_remove(ctx, ok), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before);
    estc_ctx_free(ctx);
}
END_TEST

START_TEST(test_error_paths)
{
    estc_ctx *ctx = new_ctx();
    CK_ULONG before = count_objects(token1);
    const char *a = addr_for(token1, "errors", "1234");
    uint8_t dg[32] = {0};
    estc_buf sig = {0}, spki = {0};

    ck_assert_int_eq(estc_key_sign(ctx, a, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_key_public(ctx, a, &spki), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_ERR_NOT_FOUND);

    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_key_public(ctx, a, &spki), ESTC_OK);
    CK_ULONG with_key = count_objects(token1);
    ck_assert_int_eq(estc_key_generate(ctx, a, ESTC_KEY_RSA_2048), ESTC_ERR_EXISTS);
    uint8_t junk[40] = {0x30, 0x03, 0x02, 0x01, 0x00};
    ck_assert_int_ne(estc_key_import(ctx, addr_for(token1, "junk", "1234"), junk, sizeof(junk)),
                     ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), with_key);
    /* The key is unchanged by the refused calls. */
    estc_buf spki2 = {0};
    ck_assert_int_eq(estc_key_public(ctx, a, &spki2), ESTC_OK);
    ck_assert_uint_eq(spki.len, spki2.len);
    ck_assert_mem_eq(spki.data, spki2.data, spki.len);

    /* Malformed addresses. */
    char bad[1024];
    snprintf(bad, sizeof(bad), "pkcs11:token=%s;object=%%zz;pin-value=1234?module-path=%s", token1,
             module_path);
    ck_assert_int_eq(estc_key_sign(ctx, bad, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_BAD_ADDRESS);
    snprintf(bad, sizeof(bad), "pkcs11:token=%s;bogus=1;object=errors?module-path=%s", token1,
             module_path);
    ck_assert_int_eq(estc_key_sign(ctx, bad, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_BAD_ADDRESS);
    snprintf(bad, sizeof(bad), "pkcs11:token=%s;pin-value=1234?module-path=%s", token1,
             module_path);
    ck_assert_int_eq(estc_key_generate(ctx, bad, ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
    snprintf(bad, sizeof(bad),
             "pkcs11:token=%s;object=errors;type=cert;pin-value=1234?"
             "module-path=%s",
             token1, module_path);
    ck_assert_int_eq(estc_key_sign(ctx, bad, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_BAD_ADDRESS);

    snprintf(bad, sizeof(bad), "pkcs11:token=%s;object=;pin-value=1234?module-path=%s", token1,
             module_path);
    ck_assert_int_eq(estc_key_generate(ctx, bad, ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
    /* A traditional (not PKCS#8) EC key is refused. */
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ck_assert_ptr_nonnull(k);
    OSSL_ENCODER_CTX *ec =
        OSSL_ENCODER_CTX_new_for_pkey(k, EVP_PKEY_KEYPAIR, "DER", "type-specific", NULL);
    ck_assert_ptr_nonnull(ec);
    uint8_t *trad = NULL;
    size_t trad_len = 0;
    ck_assert_int_eq(OSSL_ENCODER_to_data(ec, &trad, &trad_len), 1);
    ck_assert_int_eq(estc_key_import(ctx, addr_for(token1, "trad", "1234"), trad, trad_len),
                     ESTC_ERR_FORMAT);
    OSSL_ENCODER_CTX_free(ec);
    OPENSSL_clear_free(trad, trad_len);
    EVP_PKEY_free(k);
    ck_assert_uint_eq(count_objects(token1), with_key);

    /* What p11-kit would let pass but estc addresses refuse. */
    static const char *const refused[] = {
        "pkcs11:token=A;token=B;object=x",
        "pkcs11:object=x;pin-value=1?pin-value=2",
        "pkcs11:object=x?module-path=/a&module-path=/b",
        "pkcs11:object=x?foo=1",
        "pkcs11:object=x?token=A",
        "pkcs11:object=x;module-path=/a",
        "pkcs11:object=x;type=private;objecttype=cert",
        "pkcs11:object=x;type=key",
        "pkcs11:object=x;slot-id=1a",
        "pkcs11:object",
        "pkcs11:=x",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        ck_assert_msg(estc_key_sign(ctx, refused[i], ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32,
                                    &sig) == ESTC_ERR_BAD_ADDRESS,
                      "%s", refused[i]);
    }
    /* An empty segment is skipped, and what follows it still counts (p11-kit
     * alone would take token=A for a query attribute and ignore it). */
    snprintf(bad, sizeof(bad),
             "pkcs11:object=errors;;token=NoSuchToken;pin-value=1234?module-path=%s", module_path);
    ck_assert_int_eq(estc_key_sign(ctx, bad, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_ENGINE);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "CKR_TOKEN_NOT_PRESENT"));

    /* An absent token, an absent module. */
    const char *absent = addr_for("NoSuchToken", "errors", "1234");
    /* Not NOT_FOUND: a key on an unplugged token is not a removed key. */
    ck_assert_int_eq(estc_key_sign(ctx, absent, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_ENGINE);
    ck_assert_int_eq(estc_key_remove(ctx, absent), ESTC_ERR_ENGINE);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "CKR_TOKEN_NOT_PRESENT"));
    snprintf(bad, sizeof(bad),
             "pkcs11:token=%s;object=errors;pin-value=1234?module-path=/nonexistent/libnone.so",
             token1);
    ck_assert_int_eq(estc_key_sign(ctx, bad, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, dg, 32, &sig),
                     ESTC_ERR_ENGINE);
    ck_assert_ptr_null(sig.data);
    ck_assert_int_eq(
        estc_key_remove(ctx, "pkcs11:object=errors;pin-value=1234?module-name=no-such-module"),
        ESTC_ERR_ENGINE);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "no-such-module"));

    ck_assert_int_eq(estc_key_remove(ctx, a), ESTC_OK);
    ck_assert_uint_eq(count_objects(token1), before);
    estc_buf_free(&spki);
    estc_buf_free(&spki2);
    estc_ctx_free(ctx);
}
END_TEST

/* ------------------------------------------------------------------------ */

static int helper_mode(const char *mode, const char *addr)
{
    estc_ctx *ctx = NULL;
    if (estc_ctx_new(&ctx) != ESTC_OK) {
        return 2;
    }
    estc_err err = ESTC_ERR_INVALID_ARG;
    if (strcmp(mode, "--make-key") == 0) {
        err = estc_key_generate(ctx, addr, ESTC_KEY_EC_P256);
    } else if (strcmp(mode, "--remove-key") == 0) {
        err = estc_key_remove(ctx, addr);
    }
    if (err != ESTC_OK) {
        fprintf(stderr, "%s: %s\n", estc_err_name(err), estc_ctx_error_detail(ctx));
    }
    estc_ctx_free(ctx);
    return err == ESTC_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    module_path = getenv("ESTC_P11_MODULE");
    token1 = getenv("ESTC_P11_TOKEN1");
    token2 = getenv("ESTC_P11_TOKEN2");
    if (module_path == NULL || token1 == NULL || token2 == NULL) {
        fprintf(stderr,
                "set ESTC_P11_MODULE, ESTC_P11_TOKEN1 and ESTC_P11_TOKEN2 (run-tests.sh)\n");
        return 2;
    }
    if (argc == 3) {
        return helper_mode(argv[1], argv[2]);
    }
    Suite *s = suite_create("pkcs11");
    TCase *tc = tcase_create("softhsm");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_key_attributes);
    tcase_add_test(tc, test_wrong_pin);
    tcase_add_test(tc, test_purge_counts);
    tcase_add_test(tc, test_two_tokens);
    tcase_add_test(tc, test_fork);
    tcase_add_test(tc, test_relogin);
    tcase_add_test(tc, test_replaced_behind_our_back);
    tcase_add_test(tc, test_replaced_by_other_process);
    tcase_add_test(tc, test_token_reinitialized);
    tcase_add_test(tc, test_rsa_signatures);
    tcase_add_test(tc, test_certificates);
    tcase_add_test(tc, test_list_and_derive);
    tcase_add_test(tc, test_module_selection);
    tcase_add_test(tc, test_error_paths);
    tcase_add_test(tc, test_init_reserved);
    tcase_add_test(tc, test_long_label);
    tcase_add_test(tc, test_pin_source_refused);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_VERBOSE);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
