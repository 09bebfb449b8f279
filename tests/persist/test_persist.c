/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Suite 'persist': the renewal formula, persist / restore on file and
 * memory streams with mem:, file: and pkcs11: engines, refusal of corrupt
 * states, persist during an operation, tick-driven renewals against a real
 * estc-server, retries and the fallback to /sen, and crash recovery.
 *
 * run.sh starts the peers and calls: test-persist PART
 * (unit | software | server | pkcs11).
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <estc/client.h>
#include <estc/persist.h>
#include <estc/schedule.h>

#include "../fixtures/check_main.h"

static char dir[512];

static const char *env(const char *name)
{
    const char *v = getenv(name);
    ck_assert_msg(v != NULL && v[0] != '\0', "%s is not set (run through run.sh)", name);
    return v;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/estc-persist-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* "file:" + the case's folder + "/" + @name. */
static const char *file_prefix(const char *name)
{
    static char base[600];
    snprintf(base, sizeof(base), "file:%s/%s", dir, name);
    return base;
}

/* The cases @name_file and @name_pkcs11: @fn(prefix, in_token) on the
 * case's own file: folder and on the SoftHSM2 token that run.sh made. */
#define FILE_AND_PKCS11_CASES(name, fn)                                                            \
    START_TEST(name##_file)                                                                        \
    {                                                                                              \
        fn(file_prefix(""), false);                                                                \
    }                                                                                              \
    END_TEST                                                                                       \
    START_TEST(name##_pkcs11)                                                                      \
    {                                                                                              \
        fn(env("ESTC_TEST_P11_PREFIX"), true);                                                     \
    }                                                                                              \
    END_TEST

static bool read_file(const char *path, estc_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    uint8_t chunk[4096];
    size_t n;
    estc_buf b = {0};
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        uint8_t *g = realloc(b.data, b.len + n);
        ck_assert_ptr_nonnull(g);
        memcpy(g + b.len, chunk, n);
        b.data = g;
        b.len += n;
    }
    fclose(f);
    *out = b;
    return true;
}

/* ---- the renewal formula ------------------------------------------------------ */

START_TEST(formula_edges)
{
    int64_t t = 0;
    const int64_t day = 86400, month = 30 * day;
    /* A year of validity: the margin decides (notAfter - 30 days). */
    ck_assert_int_eq(estc_schedule_renewal_time(0, 0, 365 * day, 0.9, month, &t), ESTC_OK);
    ck_assert_int_eq(t, 365 * day - 30 * day);
    /* Provisioned late in a long validity: the usage share decides. */
    ck_assert_int_eq(estc_schedule_renewal_time(300 * day, 0, 365 * day, 0.9, month, &t), ESTC_OK);
    ck_assert_int_eq(t, 300 * day + (int64_t)(0.9 * (double)(65 * day)));
    /* Short validity (10 s), margin larger than the validity: usage. */
    ck_assert_int_eq(estc_schedule_renewal_time(1000, 1000, 1010, 0.9, month, &t), ESTC_OK);
    ck_assert_int_eq(t, 1009);
    /* Margin zero: renew at notAfter. */
    ck_assert_int_eq(estc_schedule_renewal_time(0, 0, 100, 0.5, 0, &t), ESTC_OK);
    ck_assert_int_eq(t, 100);
    ck_assert_int_eq(estc_schedule_renewal_time(0, 0, 100, 1.0, 0, &t), ESTC_OK);
    ck_assert_int_eq(t, 100);
    /* Clock before notBefore (provisioned earlier): counts from notBefore. */
    ck_assert_int_eq(estc_schedule_renewal_time(500, 1000, 2000, 0.5, 0, &t), ESTC_OK);
    ck_assert_int_eq(t, 2000);
    ck_assert_int_eq(estc_schedule_renewal_time(500, 1000, 2000, 0.5, 600, &t), ESTC_OK);
    ck_assert_int_eq(t, 1500);
    /* Unknown provisioning time (0): from notBefore. */
    ck_assert_int_eq(estc_schedule_renewal_time(0, 1000, 2000, 0.9, 1000, &t), ESTC_OK);
    ck_assert_int_eq(t, 1900);
    /* Already expired (provisioned after notAfter): due at notAfter. */
    ck_assert_int_eq(estc_schedule_renewal_time(5000, 1000, 2000, 0.9, month, &t), ESTC_OK);
    ck_assert_int_eq(t, 2000);
    /* Zero-length validity. */
    ck_assert_int_eq(estc_schedule_renewal_time(10, 10, 10, 0.9, month, &t), ESTC_OK);
    ck_assert_int_eq(t, 10);
    /* Huge margin does not overflow. */
    ck_assert_int_eq(estc_schedule_renewal_time(0, 0, 100, 0.9, INT64_MAX, &t), ESTC_OK);
    ck_assert_int_eq(t, 90);
    /* Bad arguments. */
    t = 42;
    ck_assert_int_eq(estc_schedule_renewal_time(0, 10, 5, 0.9, 0, &t), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_schedule_renewal_time(0, 0, 5, 0.0, 0, &t), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_schedule_renewal_time(0, 0, 5, 1.5, 0, &t), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_schedule_renewal_time(0, 0, 5, 0.9, -1, &t), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_schedule_renewal_time(0, 0, 5, 0.9, 0, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(t, 42);
}
END_TEST

START_TEST(config_checks)
{
    estc_ctx *ctx = NULL;
    estc_client *c = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    estc_schedule_config cfg;
    estc_schedule_config_init(&cfg);
    ck_assert(cfg.enabled);
    ck_assert(cfg.nominal_usage == 0.9);
    ck_assert_int_eq(cfg.max_margin_s, 30 * 86400);
    ck_assert_int_eq(estc_client_set_schedule(c, &cfg), ESTC_OK);
    cfg.nominal_usage = 0;
    ck_assert_int_eq(estc_client_set_schedule(c, &cfg), ESTC_ERR_INVALID_ARG);
    cfg.nominal_usage = 0.9;
    cfg.retry_spacing_s = 0;
    ck_assert_int_eq(estc_client_set_schedule(c, &cfg), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_client_set_cacerts_policy(c, ESTC_CACERTS_GLOBAL, NULL, NULL),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_client_set_cacerts_policy(c, (estc_cacerts_policy)9, NULL, NULL),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_client_set_cacerts_policy(c, ESTC_CACERTS_NEVER, NULL, NULL), ESTC_OK);
    /* Not enrolled: the deadline is now. */
    int64_t when = 0;
    ck_assert_int_eq(estc_client_next_deadline(c, &when), ESTC_OK);
    ck_assert(when <= estc_client_now(c));
    ck_assert_int_eq(estc_client_renewal_info(c, NULL, NULL, NULL, NULL, NULL), ESTC_ERR_NOT_FOUND);
    ck_assert_str_eq(estc_tick_result_name(ESTC_TICK_REENROLLED), "reenrolled");
    ck_assert_int_eq(estc_client_tick(NULL, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert(!estc_client_is_ready_for_persistence(NULL));
    ck_assert_int_eq(estc_client_persist(c, NULL), ESTC_ERR_INVALID_ARG);
    estc_client_free(c);
    estc_ctx_free(ctx);
}
END_TEST

/* ---- persist / restore without a server ------------------------------------------ */

/* A certificate for the key at @key_addr, self-signed in software (the
 * persisted state needs a certificate, not an issuer). */
static void make_cert(estc_ctx *ctx, const char *key_addr, int days, estc_buf *der)
{
    estc_buf spki = {0};
    ck_assert_int_eq(estc_key_public(ctx, key_addr, &spki), ESTC_OK);
    const unsigned char *p = spki.data;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spki.len);
    ck_assert_ptr_nonnull(pub);
    EVP_PKEY *signer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ck_assert_ptr_nonnull(signer);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"persist", -1, -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400);
    X509_set_pubkey(x, pub);
    ck_assert_int_gt(X509_sign(x, signer, EVP_sha256()), 0);
    unsigned char *out = NULL;
    int len = i2d_X509(x, &out);
    ck_assert_int_gt(len, 0);
    ck_assert_int_eq(estc_buf_set(der, out, (size_t)len), ESTC_OK);
    OPENSSL_free(out);
    X509_NAME_free(n);
    X509_free(x);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(signer);
    estc_buf_free(&spki);
}

/* A client "enrolled" by hand: key, certificate and one CA object made
 * through its lifecycle record and committed. */
static estc_client *hand_enrolled(estc_ctx *ctx, const char *base)
{
    char key[700], cert[700], prefix[700], ca[800];
    estc_client *c = NULL;
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    snprintf(key, sizeof(key), "%skey", base);
    snprintf(cert, sizeof(cert), "%scert", base);
    snprintf(prefix, sizeof(prefix), "%s", base);
    ck_assert_int_eq(estc_client_set_enrolled(c, key, cert, prefix), ESTC_OK);
    estc_lifecycle *lc = estc_client_lifecycle(c);
    ck_assert_int_eq(estc_lifecycle_key_generate(lc, key, ESTC_KEY_EC_P256), ESTC_OK);
    estc_buf der = {0};
    make_cert(ctx, key, 10, &der);
    ck_assert_int_eq(estc_lifecycle_cert_store(lc, cert, ESTC_OBJ_CERT, der.data, der.len),
                     ESTC_OK);
    /* Where the library puts a CA certificate: a restore keeps only the
     * objects under the client's bases. */
    char *ca_addr = NULL;
    ck_assert_int_eq(estc_address_derive(ctx, prefix, ESTC_OBJ_TRUST, "ca1", &ca_addr), ESTC_OK);
    snprintf(ca, sizeof(ca), "%s", ca_addr);
    free(ca_addr);
    ck_assert_int_eq(estc_lifecycle_cert_store(lc, ca, ESTC_OBJ_TRUST, der.data, der.len), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_commit(lc), ESTC_OK);
    estc_buf_free(&der);
    return c;
}

/* Everything observable about a client's state, as text. */
static char *describe(estc_client *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    fprintf(f, "key %s\ncert %s\n", estc_client_key_address(c), estc_client_cert_address(c));
    estc_buf der = {0};
    if (estc_client_certificate(c, &der) == ESTC_OK) {
        uint8_t md[32];
        unsigned n = 0;
        EVP_Digest(der.data, der.len, md, &n, EVP_sha256(), NULL);
        for (unsigned i = 0; i < n; i++)
            fprintf(f, "%02x", md[i]);
        fputc('\n', f);
    }
    estc_buf_free(&der);
    fprintf(f, "cas %zu\n", estc_client_ca_count(c));
    estc_lifecycle *lc = estc_client_lifecycle(c);
    for (size_t i = 0; i < estc_lifecycle_count(lc); i++) {
        const char *a;
        estc_obj_kind k;
        estc_obj_state s;
        ck_assert_int_eq(estc_lifecycle_get(lc, i, &a, &k, &s, NULL), ESTC_OK);
        fprintf(f, "obj %s %d %d\n", a, (int)k, (int)s);
    }
    fclose(f);
    return text;
}

static void same_public_key(estc_ctx *a, const char *addr_a, estc_ctx *b, const char *addr_b)
{
    estc_buf x = {0}, y = {0};
    ck_assert_int_eq(estc_key_public(a, addr_a, &x), ESTC_OK);
    ck_assert_int_eq(estc_key_public(b, addr_b, &y), ESTC_OK);
    ck_assert_uint_eq(x.len, y.len);
    ck_assert_mem_eq(x.data, y.data, x.len);
    estc_buf_free(&x);
    estc_buf_free(&y);
}

/* Persist, then restore into a fresh context and client. */
static void round_trip(const char *base, bool file_stream)
{
    estc_ctx *ctx = NULL, *ctx2 = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    estc_client *c = hand_enrolled(ctx, base);
    ck_assert(estc_client_is_ready_for_persistence(c));
    estc_buf store = {0};
    char path[700];
    snprintf(path, sizeof(path), "%s/state", dir);
    estc_state_stream s;
    if (file_stream)
        ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    else
        ck_assert_int_eq(estc_state_stream_mem(&s, &store), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
    ck_assert(!estc_lifecycle_changed(estc_client_lifecycle(c)));
    if (file_stream) {
        struct stat st;
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0600);
    }
    char *before = describe(c);
    char *key = strdup(estc_client_key_address(c));
    ck_assert_ptr_nonnull(key);
    /* One client at a time per process (the provider lives in OpenSSL's
     * default library context). */
    estc_client_free(c);

    ck_assert_int_eq(estc_ctx_new(&ctx2), ESTC_OK);
    estc_client *c2 = NULL;
    ck_assert_int_eq(estc_client_new(ctx2, &c2), ESTC_OK);
    ck_assert_int_eq(estc_client_restore(c2, &s), ESTC_OK);
    char *after = describe(c2);
    ck_assert_str_eq(before, after);
    same_public_key(ctx, key, ctx2, estc_client_key_address(c2));
    free(key);
    ck_assert(!estc_lifecycle_changed(estc_client_lifecycle(c2)));
    /* Unchanged since the restore: cleanup keeps the objects. */
    ck_assert_int_eq(estc_client_cleanup(c2), ESTC_OK);
    ck_assert_uint_eq(estc_lifecycle_count(estc_client_lifecycle(c2)), 3);
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx2, estc_client_key_address(c2), ESTC_OBJ_KEY, &found),
                     ESTC_OK);
    ck_assert(found);

    estc_client_free(c2);
    c2 = NULL;
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
    /* An attempt rolled back completely is no change. */
    ck_assert_int_eq(
        estc_lifecycle_supersede(estc_client_lifecycle(c), estc_client_cert_address(c)), ESTC_OK);
    ck_assert(!estc_client_is_ready_for_persistence(c));
    ck_assert_int_eq(estc_lifecycle_rollback(estc_client_lifecycle(c)), ESTC_OK);
    ck_assert(!estc_lifecycle_changed(estc_client_lifecycle(c)));
    /* A change since the last persist: cleanup removes every object made. */
    ck_assert_int_eq(estc_lifecycle_commit(estc_client_lifecycle(c)), ESTC_OK);
    ck_assert(estc_lifecycle_changed(estc_client_lifecycle(c)));
    ck_assert_int_eq(estc_client_cleanup(c), ESTC_OK);
    ck_assert_uint_eq(estc_lifecycle_count(estc_client_lifecycle(c)), 0);
    ck_assert_int_eq(estc_object_exists(ctx, estc_client_key_address(c), ESTC_OBJ_KEY, &found),
                     ESTC_OK);
    ck_assert(!found);

    free(before);
    free(after);
    estc_buf_free(&store);
    estc_client_free(c2);
    estc_client_free(c);
    estc_ctx_free(ctx2);
    estc_ctx_free(ctx);
}

START_TEST(round_trip_mem_memstream)
{
    round_trip("mem:rt-", false);
}
END_TEST

START_TEST(round_trip_mem_filestream)
{
    round_trip("mem:rt-", true);
}
END_TEST

START_TEST(round_trip_file_engine)
{
    round_trip(file_prefix("obj-"), true);
}
END_TEST

/* Every corrupt byte, every truncation, a wrong version: ESTC_ERR_FORMAT
 * and the restoring client and context stay as they were. */
START_TEST(corrupt_states_refused)
{
    estc_ctx *ctx = NULL, *ctx2 = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    estc_client *c = hand_enrolled(ctx, "mem:cx-");
    estc_buf good = {0}, bad = {0};
    estc_state_stream s, sb;
    ck_assert_int_eq(estc_state_stream_mem(&s, &good), ESTC_OK);
    ck_assert_int_eq(estc_state_stream_mem(&sb, &bad), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
    estc_client_free(c);

    ck_assert_int_eq(estc_ctx_new(&ctx2), ESTC_OK);
    estc_client *c2 = NULL;
    ck_assert_int_eq(estc_client_new(ctx2, &c2), ESTC_OK);
    char *before = describe(c2);
    bool found = true;
    for (size_t i = 0; i < good.len; i++) {
        ck_assert_int_eq(estc_buf_set(&bad, good.data, good.len), ESTC_OK);
        bad.data[i] ^= (uint8_t)(1u << (i % 8));
        ck_assert_msg(estc_client_restore(c2, &sb) == ESTC_ERR_FORMAT, "byte %zu", i);
    }
    for (size_t n = 1; n < good.len; n += (n < 64 ? 1 : 7)) {
        ck_assert_int_eq(estc_buf_set(&bad, good.data, n), ESTC_OK);
        ck_assert_msg(estc_client_restore(c2, &sb) == ESTC_ERR_FORMAT, "length %zu", n);
    }
    /* One byte more. */
    ck_assert_int_eq(estc_buf_set(&bad, good.data, good.len), ESTC_OK);
    uint8_t *g = realloc(bad.data, good.len + 1);
    ck_assert_ptr_nonnull(g);
    bad.data = g;
    bad.data[bad.len++] = 0;
    ck_assert_int_eq(estc_client_restore(c2, &sb), ESTC_ERR_FORMAT);
    /* Version 2 with a correct digest: still refused. */
    ck_assert_int_eq(estc_buf_set(&bad, good.data, good.len), ESTC_OK);
    bad.data[11] = 2;
    unsigned mdlen = 0;
    EVP_Digest(bad.data, bad.len - 32, bad.data + bad.len - 32, &mdlen, EVP_sha256(), NULL);
    ck_assert_int_eq(estc_client_restore(c2, &sb), ESTC_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx2), "version"));
    /* Nothing stored. */
    estc_buf_free(&bad);
    ck_assert_int_eq(estc_client_restore(c2, &sb), ESTC_ERR_NOT_FOUND);
    char path[700];
    snprintf(path, sizeof(path), "%s/absent", dir);
    estc_state_stream sf;
    ck_assert_int_eq(estc_state_stream_file(&sf, path), ESTC_OK);
    ck_assert_int_eq(estc_client_restore(c2, &sf), ESTC_ERR_NOT_FOUND);

    char *after = describe(c2);
    ck_assert_str_eq(before, after);
    /* No mem: object was re-created by a refused restore. */
    ck_assert_int_eq(estc_object_exists(ctx2, "mem:cx-key", ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found);
    ck_assert_int_eq(estc_client_restore(c2, &s), ESTC_OK);
    ck_assert_int_eq(estc_object_exists(ctx2, "mem:cx-key", ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(found);
    free(before);
    free(after);
    estc_buf_free(&good);
    estc_client_free(c2);
    estc_ctx_free(ctx2);
    estc_ctx_free(ctx);
}
END_TEST

/* Pending objects: not ready, persist refused, the file byte-identical. */
START_TEST(persist_refused_when_pending)
{
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    estc_client *c = hand_enrolled(ctx, "mem:pp-");
    char path[700];
    snprintf(path, sizeof(path), "%s/state", dir);
    estc_state_stream s;
    ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
    estc_buf before = {0}, after = {0};
    ck_assert(read_file(path, &before));
    ck_assert_int_eq(
        estc_lifecycle_key_generate(estc_client_lifecycle(c), "mem:pp-new", ESTC_KEY_EC_P256),
        ESTC_OK);
    ck_assert(!estc_client_is_ready_for_persistence(c));
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_ERR_STATE);
    ck_assert(read_file(path, &after));
    ck_assert_uint_eq(before.len, after.len);
    ck_assert_mem_eq(before.data, after.data, before.len);
    ck_assert_int_eq(estc_lifecycle_rollback(estc_client_lifecycle(c)), ESTC_OK);
    ck_assert(estc_client_is_ready_for_persistence(c));
    /* A stream that fails: the error comes back. */
    snprintf(path, sizeof(path), "%s/no-such-dir/state", dir);
    ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_ERR_IO);
    estc_buf_free(&before);
    estc_buf_free(&after);
    estc_client_free(c);
    estc_ctx_free(ctx);
}
END_TEST

/* The state file: a failed write says why (the system's reason); what is
 * not a regular file of this user that no one else can write is refused
 * without blocking and left as it is. */
START_TEST(state_file_checks)
{
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    estc_client *c = hand_enrolled(ctx, "mem:sf-");
    char path[700], sub[700];
    estc_state_stream s;
    /* The path is a folder: rename() fails with EISDIR, and the detail has
     * the system's text. */
    snprintf(path, sizeof(path), "%s/a-folder", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_ERR_IO);
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), strerror(EISDIR)) != NULL, "%s",
                  estc_ctx_error_detail(ctx));
    /* A missing folder: ENOENT's text. */
    snprintf(path, sizeof(path), "%s/no-such-dir/state", dir);
    ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_ERR_IO);
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), strerror(ENOENT)) != NULL, "%s",
                  estc_ctx_error_detail(ctx));
    /* A good state, then the same bytes behind refused modes and kinds. */
    snprintf(path, sizeof(path), "%s/state", dir);
    ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
    ck_assert_int_eq(chmod(path, 0620), 0);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_ERR_IO);
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), "writable by group or others") != NULL, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_int_eq(chmod(path, 0600), 0);
    snprintf(sub, sizeof(sub), "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(sub, 0600), 0);
    ck_assert_int_eq(estc_state_stream_file(&s, sub), ESTC_OK);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_ERR_IO); /* returns: no writer needed */
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), "not a regular file") != NULL, "%s",
                  estc_ctx_error_detail(ctx));
    snprintf(sub, sizeof(sub), "%s/link", dir);
    ck_assert_int_eq(symlink(path, sub), 0);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_ERR_IO);
    ck_assert_int_eq(estc_state_stream_file(&s, sub), ESTC_OK);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_ERR_IO);
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), "symbolic link") != NULL, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_int_eq(chmod(dir, 0770), 0);
    ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_ERR_IO);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_ERR_IO);
    ck_assert_msg(strstr(estc_ctx_error_detail(ctx), "folder") != NULL, "%s",
                  estc_ctx_error_detail(ctx));
    ck_assert_int_eq(chmod(dir, 0700), 0);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
    estc_client_free(c);
    estc_ctx_free(ctx);
}
END_TEST

/* A record that names an object the client never made (in another folder,
 * as a hand-written state would): the restore drops the entry with a
 * warning, so no later commit or cleanup can remove the object. */
START_TEST(foreign_record_dropped)
{
    char base[700], foreign[800], other[700];
    snprintf(base, sizeof(base), "%s", file_prefix("dev-"));
    snprintf(other, sizeof(other), "%s/other", dir);
    ck_assert_int_eq(mkdir(other, 0700), 0);
    snprintf(foreign, sizeof(foreign), "file:%s/victim.key.pem", other);
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    estc_client *c = hand_enrolled(ctx, base);
    estc_lifecycle *lc = estc_client_lifecycle(c);
    ck_assert_int_eq(estc_lifecycle_key_generate(lc, foreign, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_commit(lc), ESTC_OK);
    estc_buf store = {0};
    estc_state_stream s;
    ck_assert_int_eq(estc_state_stream_mem(&s, &store), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
    estc_client_free(c);

    /* The same bases configured again, as estc run does. */
    char key[720], cert[720];
    snprintf(key, sizeof(key), "%skey", base);
    snprintf(cert, sizeof(cert), "%scert", base);
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    ck_assert_int_eq(estc_client_set_enrolled(c, key, cert, base), ESTC_OK);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
    lc = estc_client_lifecycle(c);
    ck_assert_uint_eq(estc_lifecycle_count(lc), 3); /* key, certificate, CA */
    for (size_t i = 0; i < estc_lifecycle_count(lc); i++) {
        const char *addr = NULL;
        ck_assert_int_eq(estc_lifecycle_get(lc, i, &addr, NULL, NULL, NULL), ESTC_OK);
        ck_assert_str_ne(addr, foreign);
    }
    ck_assert_int_eq(estc_lifecycle_commit(lc), ESTC_OK);
    ck_assert_int_eq(estc_client_cleanup(c), ESTC_OK);
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx, foreign, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert_msg(found, "the foreign key was removed");
    estc_client_free(c);
    estc_buf_free(&store);
    estc_ctx_free(ctx);
}
END_TEST

/* ---- against estc-server ----------------------------------------------------------- */

struct clock {
    int64_t offset; /* added to the real time */
};

static int64_t test_clock(void *arg)
{
    return (int64_t)time(NULL) + ((struct clock *)arg)->offset;
}

/* A client of server A or B with the bootstrap credentials; enrolled
 * objects under @base. */
static estc_client *server_client(estc_ctx *ctx, char which, const char *base)
{
    char name[32], key[900], cert[900];
    estc_client *c = NULL;
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    snprintf(name, sizeof(name), "ESTC_TEST_%c_URI", which);
    ck_assert_int_eq(estc_client_set_server(c, env(name)), ESTC_OK);
    snprintf(name, sizeof(name), "ESTC_TEST_%c_CA", which);
    ck_assert_int_eq(estc_client_add_trust_anchor(c, env(name), true), ESTC_OK);
    ck_assert_int_eq(
        estc_client_set_credentials(c, env("ESTC_TEST_BOOT_CERT"), env("ESTC_TEST_BOOT_KEY")),
        ESTC_OK);
    ck_assert_int_eq(estc_client_set_subject(c, "/CN=device-1"), ESTC_OK);
    ck_assert_int_eq(estc_client_add_san(c, "DNS:device-1.example"), ESTC_OK);
    ck_assert_int_eq(estc_client_set_limits(c, 4000, 3, 5), ESTC_OK);
    if (base != NULL) {
        snprintf(key, sizeof(key), "%s", base);
        snprintf(cert, sizeof(cert), "%s", base);
        /* base is a prefix: the driver composes the names. */
        char *k = NULL, *ce = NULL;
        ck_assert_int_eq(estc_address_derive(ctx, base, ESTC_OBJ_KEY, "estc-key", &k), ESTC_OK);
        ck_assert_int_eq(estc_address_derive(ctx, base, ESTC_OBJ_CERT, "estc-cert", &ce), ESTC_OK);
        ck_assert_int_eq(estc_client_set_enrolled(c, k, ce, base), ESTC_OK);
        free(k);
        free(ce);
    }
    return c;
}

/* A client of server @which as server_client() makes it, on the test clock
 * @clk. */
static estc_client *clocked_client(estc_ctx *ctx, char which, const char *base, struct clock *clk)
{
    estc_client *c = server_client(ctx, which, base);
    ck_assert_int_eq(estc_client_set_clock(c, test_clock, clk), ESTC_OK);
    return c;
}

static void tick_expect(estc_client *c, estc_tick_result want)
{
    estc_tick_result what = ESTC_TICK_NOTHING;
    estc_err err = estc_client_tick(c, &what);
    ck_assert_msg(what == want, "tick: %s (%s: %s), wanted %s", estc_tick_result_name(what),
                  estc_err_name(err), estc_ctx_error_detail(NULL), estc_tick_result_name(want));
}

static void tick_ok(estc_client *c, estc_ctx *ctx, estc_tick_result want)
{
    estc_tick_result what = ESTC_TICK_NOTHING;
    estc_err err = estc_client_tick(c, &what);
    ck_assert_msg(err == ESTC_OK && what == want, "tick: %s %s (%s), wanted %s",
                  estc_tick_result_name(what), estc_err_name(err), estc_ctx_error_detail(ctx),
                  estc_tick_result_name(want));
}

/* Sleeps (real time) until the client's clock reaches @when. */
static void sleep_until(estc_client *c, int64_t when)
{
    while (estc_client_now(c) < when) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static bool collect(void *arg, const char *addr, estc_obj_kind kind)
{
    (void)kind;
    char ***list = arg;
    size_t n = 0;
    while ((*list)[n] != NULL)
        n++;
    char **g = realloc(*list, (n + 2) * sizeof(*g));
    ck_assert_ptr_nonnull(g);
    g[n] = strdup(addr);
    g[n + 1] = NULL;
    *list = g;
    return true;
}

/* Removes every mem: object of the context. */
static void wipe_mem(estc_ctx *ctx)
{
    for (int k = ESTC_OBJ_KEY; k <= ESTC_OBJ_TRUST; k++) {
        char **list = calloc(1, sizeof(*list));
        ck_assert_ptr_nonnull(list);
        ck_assert_int_eq(estc_object_list(ctx, "mem:", (estc_obj_kind)k, collect, &list), ESTC_OK);
        for (size_t i = 0; list[i] != NULL; i++) {
            ck_assert_int_eq(estc_object_remove(ctx, list[i], (estc_obj_kind)k), ESTC_OK);
            free(list[i]);
        }
        free(list);
    }
}

/* Counts the objects on the SoftHSM token (pkcs11-tool, after login). */
static int token_objects(void)
{
    char cmd[1200];
    const char *module = strstr(env("ESTC_TEST_P11_PREFIX"), "module-path=") + 12;
    snprintf(cmd, sizeof(cmd),
             "pkcs11-tool --module '%s' --token-label persist --login --pin 1234 "
             "--list-objects 2>/dev/null | grep -cE '^(Private Key|Public Key|Certificate|Data|"
             "Secret Key) Object'",
             module);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    int n = -1;
    ck_assert_int_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

/*
 * Tick-driven renewals on time: the certificates of server A last a few
 * seconds; with nominal_usage 0.5 each renewal falls half-way. Also the
 * persist / restore round trip of server-issued credentials, and /sren
 * working with the restored key. With @count, the token's objects stay
 * constant over the renewals.
 */
static void renewals(const char *base, bool count)
{
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    struct clock clk = {0};
    estc_client *c = clocked_client(ctx, 'A', base, &clk);
    estc_schedule_config cfg;
    estc_schedule_config_init(&cfg);
    cfg.nominal_usage = 0.5;
    cfg.retry_spacing_s = 1;
    ck_assert_int_eq(estc_client_set_schedule(c, &cfg), ESTC_OK);
    char path[700];
    snprintf(path, sizeof(path), "%s/state", dir);
    estc_state_stream s;
    ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    int initial = count ? token_objects() : 0;

    tick_ok(c, ctx, ESTC_TICK_CACERTS);
    tick_ok(c, ctx, ESTC_TICK_ENROLLED);
    tick_ok(c, ctx, ESTC_TICK_NOTHING);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
    int enrolled = count ? token_objects() : 0;
    if (count)
        ck_assert_int_gt(enrolled, initial);

    estc_buf prev = {0};
    ck_assert_int_eq(estc_client_certificate(c, &prev), ESTC_OK);
    for (int round = 0; round < 3; round++) {
        int64_t nb, na, prov, renewal, when;
        ck_assert_int_eq(estc_client_renewal_info(c, &nb, &na, &prov, &renewal, NULL), ESTC_OK);
        ck_assert_int_eq(estc_client_next_deadline(c, &when), ESTC_OK);
        ck_assert_int_eq(when, renewal);
        ck_assert(renewal > estc_client_now(c) - 1);
        ck_assert(renewal < na);
        /* Early: nothing. On time: /sren, then /crts per policy. */
        tick_ok(c, ctx, ESTC_TICK_NOTHING);
        sleep_until(c, when);
        tick_ok(c, ctx, ESTC_TICK_REENROLLED);
        ck_assert_int_le(estc_client_now(c) - when, 3);
        tick_ok(c, ctx, ESTC_TICK_CACERTS);
        tick_ok(c, ctx, ESTC_TICK_NOTHING);
        estc_buf now = {0};
        ck_assert_int_eq(estc_client_certificate(c, &now), ESTC_OK);
        ck_assert(now.len != prev.len || memcmp(now.data, prev.data, now.len) != 0);
        estc_buf_free(&prev);
        prev = now;
        ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
        if (count)
            ck_assert_int_eq(token_objects(), enrolled);
    }
    estc_buf_free(&prev);

    /* Restore into a fresh client, with every mem: object gone as in a new
     * process: the same credentials, and /sren works with them (the mem:
     * key came from the state). The context stays: the provider keeps the
     * first context it was loaded with. */
    char *before = describe(c);
    estc_client_free(c);
    wipe_mem(ctx);
    c = server_client(ctx, 'A', base);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
    char *after = describe(c);
    ck_assert_str_eq(before, after);
    ck_assert_int_eq(estc_client_reenroll(c, false), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
    if (count)
        ck_assert_int_eq(token_objects(), enrolled);

    /* Unchanged since the persist: cleanup keeps everything. A change, then
     * cleanup: the token is back to where it started. */
    ck_assert_int_eq(estc_client_cleanup(c), ESTC_OK);
    if (count)
        ck_assert_int_eq(token_objects(), enrolled);
    ck_assert_int_eq(estc_client_reenroll(c, true), ESTC_OK);
    ck_assert_int_eq(estc_client_cleanup(c), ESTC_OK);
    ck_assert_uint_eq(estc_lifecycle_count(estc_client_lifecycle(c)), 0);
    if (count)
        ck_assert_int_eq(token_objects(), initial);
    free(before);
    free(after);
    estc_client_free(c);
    estc_ctx_free(ctx);
}

START_TEST(renewals_mem)
{
    renewals("mem:", false);
}
END_TEST

FILE_AND_PKCS11_CASES(renewals, renewals)

/*
 * /sren failing (the server unreachable): retries spread over the time
 * left, then the fallback to /sen with the bootstrap credentials and a new
 * key; the injected clock jumps ahead instead of waiting.
 */
START_TEST(retries_then_fallback)
{
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    struct clock clk = {0};
    estc_client *c = clocked_client(ctx, 'B', NULL, &clk);
    ck_assert_int_eq(estc_client_set_cacerts_policy(c, ESTC_CACERTS_NEVER, NULL, NULL), ESTC_OK);
    estc_schedule_config cfg;
    estc_schedule_config_init(&cfg);
    cfg.max_retries = 2;
    cfg.retry_spacing_s = 10;
    cfg.max_margin_s = 30;
    ck_assert_int_eq(estc_client_set_schedule(c, &cfg), ESTC_OK);
    ck_assert_int_eq(estc_client_set_limits(c, 800, 1, 2), ESTC_OK);
    tick_ok(c, ctx, ESTC_TICK_ENROLLED);
    char *old_key = strdup(estc_client_key_address(c));
    int64_t nb, na, renewal, when;
    ck_assert_int_eq(estc_client_renewal_info(c, &nb, &na, NULL, &renewal, NULL), ESTC_OK);
    ck_assert_int_eq(renewal, na - 30); /* validity 600 s: the margin decides */

    /* The server goes away (a port nobody listens on). */
    const char *uri = env("ESTC_TEST_B_URI");
    ck_assert_int_eq(estc_client_set_server(c, "coaps://127.0.0.1:9/est"), ESTC_OK);
    clk.offset = renewal - (int64_t)time(NULL);
    int64_t prev = 0;
    for (unsigned i = 1; i <= cfg.max_retries + 1; i++) {
        int64_t t0 = estc_client_now(c);
        tick_expect(c, ESTC_TICK_RETRY_SCHEDULED);
        unsigned failures = 0;
        ck_assert_int_eq(estc_client_renewal_info(c, NULL, NULL, NULL, NULL, &failures), ESTC_OK);
        ck_assert_uint_eq(failures, i);
        ck_assert_int_eq(estc_client_next_deadline(c, &when), ESTC_OK);
        int64_t now = estc_client_now(c);
        if (i <= cfg.max_retries) {
            /* Spread: at least the spacing, never past notAfter. */
            ck_assert_int_ge(when - t0, cfg.retry_spacing_s);
            ck_assert_int_le(when, na);
            ck_assert_int_gt(when, prev);
            tick_ok(c, ctx, ESTC_TICK_NOTHING); /* not yet */
        } else {
            ck_assert_int_le(when, now); /* the fallback is due at once */
        }
        prev = when;
        clk.offset += when - estc_client_now(c);
    }
    /* The fallback while the server is still away: failed, spaced. */
    int64_t t0 = estc_client_now(c);
    tick_expect(c, ESTC_TICK_FALLBACK_FAILED);
    ck_assert_int_eq(estc_client_next_deadline(c, &when), ESTC_OK);
    ck_assert_int_ge(when - t0, cfg.retry_spacing_s);
    ck_assert_int_le(when - estc_client_now(c), cfg.retry_spacing_s);
    /* The server is back: /sen with the bootstrap credentials, new key. */
    ck_assert_int_eq(estc_client_set_server(c, uri), ESTC_OK);
    ck_assert_int_eq(estc_client_set_limits(c, 4000, 3, 5), ESTC_OK);
    clk.offset += cfg.retry_spacing_s;
    tick_ok(c, ctx, ESTC_TICK_FALLBACK_ENROLLED);
    ck_assert_str_ne(estc_client_key_address(c), old_key);
    bool found = true;
    ck_assert_int_eq(estc_object_exists(ctx, old_key, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found); /* the replaced key is gone */
    unsigned failures = 9;
    ck_assert_int_eq(estc_client_renewal_info(c, NULL, NULL, NULL, NULL, &failures), ESTC_OK);
    ck_assert_uint_eq(failures, 0);
    /* The server issues in real time: the clock goes back to it. */
    clk.offset = 0;
    tick_ok(c, ctx, ESTC_TICK_NOTHING);
    /* An expired certificate goes to the fallback directly. */
    ck_assert_int_eq(estc_client_renewal_info(c, NULL, &na, NULL, NULL, NULL), ESTC_OK);
    clk.offset += na - estc_client_now(c) + 1;
    tick_ok(c, ctx, ESTC_TICK_FALLBACK_ENROLLED);
    free(old_key);
    estc_client_free(c);
    estc_ctx_free(ctx);
}
END_TEST

/* The trust-store policy: GLOBAL hands the /crts result to the export
 * callback (here the ready PEM file writer); a failing export is reported
 * and tried again; NEVER skips /crts. */
static estc_err failing_export(void *arg, bool global, const estc_buf *certs, size_t n)
{
    (void)global;
    (void)certs;
    (void)n;
    ++*(int *)arg;
    return ESTC_ERR_IO;
}

START_TEST(cacerts_policy)
{
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    struct clock clk = {0};
    estc_client *c = clocked_client(ctx, 'B', NULL, &clk);
    char path[700];
    snprintf(path, sizeof(path), "%s/trust.pem", dir);
    int calls = 0;
    ck_assert_int_eq(
        estc_client_set_cacerts_policy(c, ESTC_CACERTS_EST_AND_BOOTSTRAP, failing_export, &calls),
        ESTC_OK);
    estc_schedule_config cfg;
    estc_schedule_config_init(&cfg);
    cfg.retry_spacing_s = 30;
    ck_assert_int_eq(estc_client_set_schedule(c, &cfg), ESTC_OK);
    tick_expect(c, ESTC_TICK_CACERTS_FAILED);
    ck_assert_int_eq(calls, 1);
    tick_ok(c, ctx, ESTC_TICK_NOTHING); /* spaced */
    clk.offset += cfg.retry_spacing_s;
    tick_expect(c, ESTC_TICK_CACERTS_FAILED); /* the export is tried again */
    ck_assert_int_eq(calls, 2);
    ck_assert_int_eq(
        estc_client_set_cacerts_policy(c, ESTC_CACERTS_GLOBAL, estc_trust_export_file, path),
        ESTC_OK);
    clk.offset += cfg.retry_spacing_s;
    tick_ok(c, ctx, ESTC_TICK_CACERTS);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0644);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert_ptr_nonnull(x);
    X509_free(x);
    tick_ok(c, ctx, ESTC_TICK_ENROLLED);
    tick_ok(c, ctx, ESTC_TICK_NOTHING);
    estc_client_free(c);

    /* NEVER: no /crts, straight to /sen. */
    c = server_client(ctx, 'B', "mem:never-");
    ck_assert_int_eq(estc_client_set_cacerts_policy(c, ESTC_CACERTS_NEVER, NULL, NULL), ESTC_OK);
    tick_ok(c, ctx, ESTC_TICK_ENROLLED);
    ck_assert_uint_eq(estc_client_ca_count(c), 0);
    tick_ok(c, ctx, ESTC_TICK_NOTHING);
    estc_client_free(c);
    estc_ctx_free(ctx);
}
END_TEST

/* ---- during an operation ---------------------------------------------------------------- */

/* Server B answers each client's first enrollment request with 5.03: the
 * client logs the wait, and this callback acts while the operation is in
 * flight. */
struct hook {
    estc_client *client;
    const estc_state_stream *stream;
    int calls;
    estc_err persist_err;
    bool ready;
    bool crash; /* SIGKILL here: a power cut in the middle */
    estc_err tick_err, restore_err, cleanup_err;
};

static void log_hook(void *arg, estc_log_level level, const char *msg)
{
    struct hook *h = arg;
    (void)level;
    if (strstr(msg, "5.03") == NULL || h->client == NULL)
        return;
    h->calls++;
    h->ready = estc_client_is_ready_for_persistence(h->client);
    h->persist_err = estc_client_persist(h->client, h->stream);
    estc_tick_result what;
    h->tick_err = estc_client_tick(h->client, &what);
    h->restore_err = estc_client_restore(h->client, h->stream);
    h->cleanup_err = estc_client_cleanup(h->client);
    if (h->crash)
        raise(SIGKILL);
}

START_TEST(persist_during_operation)
{
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    estc_client *c = server_client(ctx, 'B', NULL);
    char path[700];
    snprintf(path, sizeof(path), "%s/state", dir);
    estc_state_stream s;
    ck_assert_int_eq(estc_state_stream_file(&s, path), ESTC_OK);
    struct hook h = {.client = c, .stream = &s};
    ck_assert_int_eq(estc_ctx_set_log(ctx, ESTC_LOG_INFO, log_hook, &h), ESTC_OK);
    /* The first /sen of the bootstrap identity may already be delayed. */
    ck_assert_int_eq(estc_client_enroll(c), ESTC_OK);
    ck_assert_int_eq(estc_client_persist(c, &s), ESTC_OK);
    estc_buf before = {0}, after = {0};
    ck_assert(read_file(path, &before));
    h.calls = 0;
    /* /sren with a new certificate's identity: delayed once. */
    ck_assert_int_eq(estc_client_reenroll(c, true), ESTC_OK);
    ck_assert_int_ge(h.calls, 1);
    ck_assert(!h.ready);
    ck_assert_int_eq(h.persist_err, ESTC_ERR_STATE);
    ck_assert_int_eq(h.tick_err, ESTC_ERR_STATE);
    ck_assert_int_eq(h.restore_err, ESTC_ERR_STATE);
    ck_assert_int_eq(h.cleanup_err, ESTC_ERR_STATE);
    ck_assert(read_file(path, &after));
    ck_assert_uint_eq(before.len, after.len);
    ck_assert_mem_eq(before.data, after.data, before.len);
    ck_assert(estc_client_is_ready_for_persistence(c));
    /* A tick and restore from inside an operation are refused too. */
    estc_buf_free(&before);
    estc_buf_free(&after);
    estc_ctx_set_log(ctx, ESTC_LOG_ERROR, NULL, NULL);
    estc_client_free(c);
    estc_ctx_free(ctx);
}
END_TEST

/* The journal file in the case's folder, as the state stream *@s (the path
 * stays valid for the case). */
static void journal_open(estc_state_stream *s)
{
    static char path[700];
    snprintf(path, sizeof(path), "%s/journal", dir);
    ck_assert_int_eq(estc_state_stream_file(s, path), ESTC_OK);
}

/* A first enrollment of a client of server B, journalled to @s. */
static void enroll_journalled(estc_ctx *ctx, const char *base, estc_state_stream *s)
{
    estc_client *c = server_client(ctx, 'B', base);
    ck_assert_int_eq(estc_client_set_journal(c, s), ESTC_OK);
    ck_assert_int_eq(estc_client_enroll(c), ESTC_OK);
    estc_client_free(c);
}

/*
 * A power cut in the middle of /sren with a new key (the key pending on
 * the token), in a child process; the journal holds the pending key.
 * Restore purges it: the token is back to its count, and the restored
 * credentials still renew.
 */
static void crash_recovery(const char *base, bool count)
{
    estc_state_stream s;
    journal_open(&s);
    int settled = -1;
    /* One context for the process and its child: the provider keeps the
     * first context it was loaded with. */
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    enroll_journalled(ctx, base, &s);
    if (count)
        settled = token_objects();
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        estc_client *c = server_client(ctx, 'B', base);
        struct hook h = {.client = c, .stream = &s, .crash = true};
        estc_buf dummy = {0};
        estc_state_stream none;
        estc_state_stream_mem(&none, &dummy);
        h.stream = &none;
        if (estc_client_restore(c, &s) != ESTC_OK || estc_client_set_journal(c, &s) != ESTC_OK)
            _exit(3);
        estc_ctx_set_log(ctx, ESTC_LOG_INFO, log_hook, &h);
        estc_client_reenroll(c, true);
        _exit(4); /* the hook did not fire */
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
    if (count)
        ck_assert_int_gt(token_objects(), settled); /* the orphan-to-be is there */

    /* A status reader sees the pending object and leaves it alone. */
    estc_client *c = server_client(ctx, 'B', base);
    ck_assert_int_eq(estc_client_restore_ex(c, &s, 99), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_client_restore_ex(c, &s, ESTC_RESTORE_READ_ONLY), ESTC_OK);
    ck_assert(!estc_client_is_ready_for_persistence(c));
    int64_t na = 0;
    ck_assert_int_eq(estc_client_renewal_info(c, NULL, &na, NULL, NULL, NULL), ESTC_OK);
    ck_assert_int_gt(na, 0);
    if (count)
        ck_assert_int_gt(token_objects(), settled);
    estc_client_free(c);

    c = server_client(ctx, 'B', base);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
    ck_assert_int_eq(estc_client_set_journal(c, &s), ESTC_OK);
    ck_assert(estc_client_is_ready_for_persistence(c));
    estc_lifecycle *lc = estc_client_lifecycle(c);
    for (size_t i = 0; i < estc_lifecycle_count(lc); i++) {
        estc_obj_state st;
        ck_assert_int_eq(estc_lifecycle_get(lc, i, NULL, NULL, &st, NULL), ESTC_OK);
        ck_assert_int_eq(st, ESTC_OBJ_COMMITTED);
    }
    if (count)
        ck_assert_int_eq(token_objects(), settled);
    /* The credentials from before the cut still work. */
    ck_assert_int_eq(estc_client_reenroll(c, true), ESTC_OK);
    if (count)
        ck_assert_int_eq(token_objects(), settled);
    /* The journal followed: a restore now finds nothing to purge. */
    char *before = describe(c);
    estc_client_free(c);
    c = server_client(ctx, 'B', base);
    ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
    char *after = describe(c);
    ck_assert_str_eq(before, after);
    ck_assert_int_eq(estc_lifecycle_count(estc_client_lifecycle(c)) > 0, 1);
    free(before);
    free(after);
    estc_client_free(c);
    estc_ctx_free(ctx);
}

/* A journal stream that cuts the power right after its @left-th write. */
struct crash_stream {
    estc_state_stream inner;
    int left;
};

static estc_err crash_write(void *arg, const uint8_t *data, size_t len)
{
    struct crash_stream *cs = arg;
    estc_err err = cs->inner.write(cs->inner.arg, data, len);
    if (--cs->left == 0)
        raise(SIGKILL);
    return err;
}

/*
 * /sren with a new key writes the journal four times: before the key, before
 * the certificate, just before the commit (the state after it), and the
 * final state. A power cut after each write in turn, and after none: each
 * time the restored client holds working credentials and the token holds
 * exactly the objects the state names.
 */
static void crash_at_every_write(const char *base, bool count)
{
    estc_state_stream s;
    journal_open(&s);
    estc_ctx *ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    enroll_journalled(ctx, base, &s);
    estc_client *c;
    int settled = count ? token_objects() : 0;
    for (int cut = 1; cut <= 5; cut++) {
        estc_buf cert_before = {0}, cert_after = {0};
        c = server_client(ctx, 'B', base);
        ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
        ck_assert_int_eq(estc_client_certificate(c, &cert_before), ESTC_OK);
        estc_client_free(c);
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            struct crash_stream cs = {.inner = s, .left = cut};
            estc_state_stream js = {.write = crash_write, .read = s.read, .arg = &cs};
            estc_client *cc = server_client(ctx, 'B', base);
            if (estc_client_restore(cc, &s) != ESTC_OK ||
                estc_client_set_journal(cc, &js) != ESTC_OK)
                _exit(3);
            estc_err err = estc_client_reenroll(cc, true);
            estc_client_free(cc);
            estc_ctx_free(ctx);
            _exit(err == ESTC_OK ? 5 : 4); /* all writes done (cut 5) */
        }
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        if (cut < 5)
            ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                          "cut %d: child status %d", cut, status);
        else
            ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 5, "child status %d", status);

        c = server_client(ctx, 'B', base);
        ck_assert_int_eq(estc_client_restore(c, &s), ESTC_OK);
        ck_assert_int_eq(estc_client_set_journal(c, &s), ESTC_OK);
        ck_assert(estc_client_is_ready_for_persistence(c));
        if (count)
            ck_assert_msg(token_objects() == settled, "cut %d: %d objects, want %d", cut,
                          token_objects(), settled);
        /* Before the commit's journal write: the old certificate; from it
         * on: the new one. */
        ck_assert_int_eq(estc_client_certificate(c, &cert_after), ESTC_OK);
        bool same = cert_before.len == cert_after.len &&
                    memcmp(cert_before.data, cert_after.data, cert_before.len) == 0;
        ck_assert_msg(same == (cut <= 2), "cut %d: certificate %s", cut,
                      same ? "kept" : "replaced");
        /* Every recorded object is there, and the credentials work. */
        estc_lifecycle *lc = estc_client_lifecycle(c);
        for (size_t i = 0; i < estc_lifecycle_count(lc); i++) {
            const char *a;
            estc_obj_kind k;
            estc_obj_state st;
            bool found = false;
            ck_assert_int_eq(estc_lifecycle_get(lc, i, &a, &k, &st, NULL), ESTC_OK);
            ck_assert_int_eq(st, ESTC_OBJ_COMMITTED);
            ck_assert_int_eq(estc_object_exists(ctx, a, k, &found), ESTC_OK);
            ck_assert_msg(found, "cut %d: %s missing", cut, a);
        }
        ck_assert_int_eq(estc_client_reenroll(c, false), ESTC_OK);
        if (count)
            ck_assert_int_eq(token_objects(), settled);
        estc_buf_free(&cert_before);
        estc_buf_free(&cert_after);
        estc_client_free(c);
    }
    estc_ctx_free(ctx);
}

FILE_AND_PKCS11_CASES(crash_every_write, crash_at_every_write)
FILE_AND_PKCS11_CASES(crash_recovery, crash_recovery)

int main(int argc, char **argv)
{
    const char *part = argc > 1 ? argv[1] : "unit";
    TCase *tc;
    Suite *s = check_suite("persist", part, setup, teardown, 240, &tc);
    if (strcmp(part, "unit") == 0) {
        tcase_add_test(tc, formula_edges);
        tcase_add_test(tc, config_checks);
        tcase_add_test(tc, round_trip_mem_memstream);
        tcase_add_test(tc, round_trip_mem_filestream);
        tcase_add_test(tc, round_trip_file_engine);
        tcase_add_test(tc, corrupt_states_refused);
        tcase_add_test(tc, persist_refused_when_pending);
        tcase_add_test(tc, state_file_checks);
        tcase_add_test(tc, foreign_record_dropped);
    } else if (strcmp(part, "software") == 0) {
        tcase_add_test(tc, renewals_mem);
        tcase_add_test(tc, renewals_file);
    } else if (strcmp(part, "server") == 0) {
        tcase_add_test(tc, retries_then_fallback);
        tcase_add_test(tc, cacerts_policy);
        tcase_add_test(tc, persist_during_operation);
        tcase_add_test(tc, crash_recovery_file);
        tcase_add_test(tc, crash_every_write_file);
    } else if (strcmp(part, "pkcs11") == 0) {
        tcase_add_test(tc, renewals_pkcs11);
        tcase_add_test(tc, crash_recovery_pkcs11);
        tcase_add_test(tc, crash_every_write_pkcs11);
    } else {
        fprintf(stderr, "unknown part %s\n", part);
        return 2;
    }
    return check_run(s);
}
