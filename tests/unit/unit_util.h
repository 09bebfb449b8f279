/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fixtures shared by the unit tests of the engine framework: a context per
 * test, a log capture, a driver of stub operations, a test certificate, a
 * scratch folder, object counting and the runner.
 *
 * Everything here is static (inline), so each test file includes it once and
 * uses what it needs.
 */
#ifndef ESTC_UNIT_UTIL_H
#define ESTC_UNIT_UTIL_H

#include <dirent.h>
#include <limits.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <estc/engine.h>

#include "../fixtures/check_main.h"

#define UNIT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* @name inside the folder @dir; two results stay valid at a time. */
static inline const char *unit_path_in(const char *dir, const char *name)
{
    static char path[2][PATH_MAX];
    static int which;
    which ^= 1;
    snprintf(path[which], sizeof(path[which]), "%s/%s", dir, name);
    return path[which];
}

/* ---- the context of each test ------------------------------------------ */

static estc_ctx *ctx __attribute__((unused));

static inline void unit_setup(void)
{
    ctx = NULL;
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    ck_assert_ptr_nonnull(ctx);
}

static inline void unit_teardown(void)
{
    estc_ctx_free(ctx);
    ctx = NULL;
}

/* Whether @haystack contains @needle. */
static inline bool unit_has(const char *haystack, const char *needle)
{
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* ---- log capture ------------------------------------------------------- */

#define UNIT_LOG_MAX 64

struct unit_log {
    int lines;
    estc_log_level level[UNIT_LOG_MAX];
    char text[UNIT_LOG_MAX][1100];
};

static inline void unit_log_fn(void *arg, estc_log_level level, const char *msg)
{
    struct unit_log *log = arg;
    if (log->lines < UNIT_LOG_MAX) {
        log->level[log->lines] = level;
        snprintf(log->text[log->lines], sizeof(log->text[0]), "%s", msg);
    }
    log->lines++;
}

/* ---- a driver of stub operations --------------------------------------- */
/* Every operation answers a fixed error, so a test sees whether (and with
 * what) the framework called the driver without any engine behind it. */

static inline estc_err unit_stub_generate(estc_ctx *c, void *s, const estc_address *a,
                                          estc_key_type t)
{
    (void)c, (void)s, (void)a, (void)t;
    return ESTC_ERR_UNSUPPORTED;
}

static inline estc_err unit_stub_public(estc_ctx *c, void *s, const estc_address *a, estc_buf *b)
{
    (void)c, (void)s, (void)a, (void)b;
    return ESTC_ERR_NOT_FOUND;
}

static inline estc_err unit_stub_sign(estc_ctx *c, void *s, const estc_address *a, estc_sig_alg al,
                                      estc_hash h, const uint8_t *d, size_t l, estc_buf *b)
{
    (void)c, (void)s, (void)a, (void)al, (void)h, (void)d, (void)l, (void)b;
    return ESTC_ERR_NOT_FOUND;
}

static inline estc_err unit_stub_remove(estc_ctx *c, void *s, const estc_address *a)
{
    (void)c, (void)s, (void)a;
    return ESTC_ERR_NOT_FOUND;
}

static inline estc_err unit_stub_store(estc_ctx *c, void *s, const estc_address *a, estc_obj_kind k,
                                       const uint8_t *d, size_t l)
{
    (void)c, (void)s, (void)a, (void)k, (void)d, (void)l;
    return ESTC_ERR_UNSUPPORTED;
}

static inline estc_err unit_stub_list(estc_ctx *c, void *s, const estc_address *p, estc_obj_kind k,
                                      estc_list_fn f, void *arg)
{
    (void)c, (void)s, (void)p, (void)k, (void)f, (void)arg;
    return ESTC_OK;
}

static inline estc_err unit_stub_exists(estc_ctx *c, void *s, const estc_address *a,
                                        estc_obj_kind k, bool *found)
{
    (void)c, (void)s, (void)a, (void)k;
    *found = false;
    return ESTC_OK;
}

/* Appends the name to the prefix, like mem:. */
static inline estc_err unit_stub_derive(estc_ctx *c, void *s, const estc_address *p,
                                        estc_obj_kind k, const char *n, char **out)
{
    (void)c, (void)s, (void)k;
    size_t len = strlen(p->text) + strlen(n) + 1;
    *out = malloc(len);
    if (*out == NULL)
        return ESTC_ERR_NOMEM;
    snprintf(*out, len, "%s%s", p->text, n);
    return ESTC_OK;
}

static inline estc_err unit_stub_export(estc_ctx *c, void *s, const estc_address *a,
                                        estc_buf *pkcs8)
{
    (void)c, (void)s, (void)a;
    return estc_buf_set(pkcs8, "stub-pkcs8", 10);
}

static inline estc_err unit_stub_file_path(estc_ctx *c, void *s, const estc_address *a, char **path)
{
    (void)c, (void)s;
    *path = strdup(a->body);
    return *path != NULL ? ESTC_OK : ESTC_ERR_NOMEM;
}

/* A valid version-2 driver for @scheme with @caps; key_export and
 * key_file_path are filled in exactly when @caps asks for them. */
static inline struct estc_driver unit_stub_driver(const char *scheme, unsigned caps)
{
    return (struct estc_driver){
        .api_version = ESTC_DRIVER_API_VERSION,
        .scheme = scheme,
        .description = "unit test stub",
        .caps = caps,
        .key_generate = unit_stub_generate,
        .key_public = unit_stub_public,
        .key_sign = unit_stub_sign,
        .key_remove = unit_stub_remove,
        .cert_store = unit_stub_store,
        .cert_load = unit_stub_public,
        .cert_remove = unit_stub_remove,
        .list = unit_stub_list,
        .exists = unit_stub_exists,
        .address_derive = unit_stub_derive,
        .key_export = (caps & ESTC_CAP_KEY_EXPORT) != 0 ? unit_stub_export : NULL,
        .key_file_path = (caps & ESTC_CAP_FILES) != 0 ? unit_stub_file_path : NULL,
    };
}

/* ---- a certificate ----------------------------------------------------- */

/* A fresh self-signed EC P-256 certificate for CN @cn as DER into @der (a
 * new key each time, so two calls never give the same bytes). */
static inline void unit_make_cert(const char *cn, estc_buf *der)
{
    static long serial = 1;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(key);
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(X509_set_version(x, 2), 1);
    ck_assert_int_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), serial++), 1);
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    ck_assert_int_eq(X509_set_pubkey(x, key), 1);
    X509_NAME *name = X509_get_subject_name(x);
    ck_assert_int_eq(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
        1);
    ck_assert_int_eq(X509_set_issuer_name(x, name), 1);
    ck_assert_int_gt(X509_sign(x, key, EVP_sha256()), 0);
    unsigned char *p = NULL;
    int len = i2d_X509(x, &p);
    ck_assert_int_gt(len, 0);
    ck_assert_int_eq(estc_buf_set(der, p, (size_t)len), ESTC_OK);
    OPENSSL_free(p);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* ---- engine objects ---------------------------------------------------- */

static inline bool unit_count_fn(void *arg, const char *addr, estc_obj_kind kind)
{
    (void)addr, (void)kind;
    (*(size_t *)arg)++;
    return true;
}

/* The number of objects of @kind that the engine lists under @prefix. */
static inline size_t unit_count(const char *prefix, estc_obj_kind kind)
{
    size_t n = 0;
    ck_assert_int_eq(estc_object_list(ctx, prefix, kind, unit_count_fn, &n), ESTC_OK);
    return n;
}

/* Whether an object of @kind is at @addr. */
static inline bool unit_exists(const char *addr, estc_obj_kind kind)
{
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx, addr, kind, &found), ESTC_OK);
    return found;
}

/* ---- scratch folders --------------------------------------------------- */

/* A new 0700 folder under $TMPDIR (or /tmp) into @buf. */
static inline void unit_mkdtemp(char *buf, size_t size)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    ck_assert_int_lt(snprintf(buf, size, "%s/estc-unit-XXXXXX", base), (int)size);
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

static inline int unit_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Removes @path and everything under it. */
static inline void unit_rm_rf(const char *path)
{
    nftw(path, unit_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The number of entries of folder @dir (without "." and ".."), and of those
 * whose name contains @part. */
static inline size_t unit_dir_count(const char *dir, const char *part)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (part == NULL || strstr(de->d_name, part) != NULL)
            n++;
    }
    closedir(d);
    return n;
}

/* ---- the runner -------------------------------------------------------- */

/* A test case with the context fixture and a timeout generous enough for
 * valgrind (scaled further by CK_TIMEOUT_MULTIPLIER). */
static inline TCase *unit_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, unit_setup, unit_teardown);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return tc;
}

/* The one Check runner of the test tree. */
static inline int unit_run(Suite *s)
{
    return check_run(s);
}

/* unit_run() with TMPDIR set to a fresh folder "estc-unit-@tag-XXXXXX",
 * removed afterwards, for suites whose tests make files. */
static inline int unit_run_in_scratch(Suite *s, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    char base[1024];
    snprintf(base, sizeof(base), "%s/estc-unit-%s-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp", tag);
    if (mkdtemp(base) == NULL || setenv("TMPDIR", base, 1) != 0) {
        perror("scratch folder");
        return EXIT_FAILURE;
    }
    int status = unit_run(s);
    unit_rm_rf(base);
    return status;
}

#endif
