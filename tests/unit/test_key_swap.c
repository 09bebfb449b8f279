/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the defences against a swapped key and of error texts:
 * the file: engine makes keys only in folders no one else can write; an
 * enrollment refuses a CSR whose public key is not the one of the key it
 * just made (before anything is sent); a stale OpenSSL error in the queue
 * is not reported as the reason of an unrelated failure; a key file is
 * checked on the descriptor it is read through (regular, this user's or
 * root's, writable by no one else).
 */
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>

#include <openssl/err.h>

#include <estc/client.h>

#include "unit_util.h"

static char dir[1024];

static void scratch_setup(void)
{
    unit_mkdtemp(dir, sizeof(dir));
}

static void scratch_teardown(void)
{
    unit_rm_rf(dir);
}

/* "file:" + @sub (a folder made with @mode inside the scratch one) + "/k.pem". */
static const char *key_in(const char *sub, unsigned mode)
{
    static char addr[PATH_MAX + 16];
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_int_eq(chmod(path, (mode_t)mode), 0);
    snprintf(addr, sizeof(addr), "file:%s/k.pem", path);
    return addr;
}

/* ---- file: key folders ---------------------------------------------------- */

START_TEST(key_folder_open_to_others_refused)
{
    static const unsigned modes[] = {0777, 0770, 0702, 01777};
    char sub[32];
    for (size_t i = 0; i < UNIT_ARRAY_LEN(modes); i++) {
        snprintf(sub, sizeof(sub), "open%zu", i);
        const char *addr = key_in(sub, modes[i]);
        estc_ctx_clear_error(ctx);
        ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_ERR_AUTH);
        ck_assert_msg(unit_has(estc_ctx_error_detail(ctx), "is writable by group or others"),
                      "mode %o: %s", modes[i], estc_ctx_error_detail(ctx));
        bool found = true;
        ck_assert_int_eq(estc_object_exists(ctx, addr, ESTC_OBJ_KEY, &found), ESTC_OK);
        ck_assert_msg(!found, "mode %o: a key was left", modes[i]);
        /* An import (server-generated key) is refused the same way. */
        EVP_PKEY *k = EVP_EC_gen("P-256");
        unsigned char *p8 = NULL;
        PKCS8_PRIV_KEY_INFO *pki = EVP_PKEY2PKCS8(k);
        int n = i2d_PKCS8_PRIV_KEY_INFO(pki, &p8);
        ck_assert_int_gt(n, 0);
        ck_assert_int_eq(estc_key_import(ctx, addr, p8, (size_t)n), ESTC_ERR_AUTH);
        OPENSSL_clear_free(p8, (size_t)n);
        PKCS8_PRIV_KEY_INFO_free(pki);
        EVP_PKEY_free(k);
    }
}
END_TEST

START_TEST(key_folder_of_own_user_accepted)
{
    const char *addr = key_in("mine", 0755);
    ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_OK);
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx, addr, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(found);
}
END_TEST

START_TEST(key_folder_of_other_user_refused)
{
    if (geteuid() != 0)
        return; /* only root can give a folder away */
    const char *addr = key_in("theirs", 0755);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/theirs", dir);
    ck_assert_int_eq(chown(path, 65534, 65534), 0);
    ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_ERR_AUTH);
    ck_assert(unit_has(estc_ctx_error_detail(ctx), "belongs to another user"));
}
END_TEST

/* ---- file: key files, checked on the open descriptor ----------------------- */

/* A key made in a private folder; @path receives its file's path. */
static const char *made_key(const char *sub, char *path, size_t size)
{
    const char *addr = key_in(sub, 0700);
    ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_OK);
    snprintf(path, size, "%s", addr + strlen("file:"));
    return addr;
}

/* Every use of the key at @addr is refused with @code and @why, and the
 * file stays (a refused key is not removed either). */
static void key_refused(const char *addr, const char *path, estc_err code, const char *why)
{
    uint8_t digest[32] = {0};
    estc_buf out = {0};
    estc_ctx_clear_error(ctx);
    ck_assert_int_eq(estc_key_public(ctx, addr, &out), code);
    ck_assert_msg(unit_has(estc_ctx_error_detail(ctx), why), "%s", estc_ctx_error_detail(ctx));
    ck_assert_int_eq(estc_key_sign(ctx, addr, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, digest,
                                   sizeof(digest), &out),
                     code);
    ck_assert_int_eq(estc_key_remove(ctx, addr), code);
    struct stat st;
    ck_assert_int_eq(lstat(path, &st), 0);
    estc_buf_free(&out);
}

START_TEST(key_file_writable_by_others_refused)
{
    char path[PATH_MAX];
    const char *addr = made_key("w", path, sizeof(path));
    ck_assert_int_eq(chmod(path, 0620), 0);
    key_refused(addr, path, ESTC_ERR_AUTH, "writable by group or others");
    ck_assert_int_eq(chmod(path, 0602), 0);
    key_refused(addr, path, ESTC_ERR_AUTH, "writable by group or others");
    ck_assert_int_eq(chmod(path, 0600), 0);
    estc_buf spki = {0};
    ck_assert_int_eq(estc_key_public(ctx, addr, &spki), ESTC_OK);
    estc_buf_free(&spki);
}
END_TEST

START_TEST(key_path_fifo_refused_without_blocking)
{
    char path[PATH_MAX];
    const char *addr = key_in("fifo", 0700);
    snprintf(path, sizeof(path), "%s", addr + strlen("file:"));
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    /* Blocking in open() would end the test by its time-out. */
    key_refused(addr, path, ESTC_ERR_IO, "not a regular file");
}
END_TEST

START_TEST(key_file_of_other_user_refused)
{
    if (geteuid() != 0)
        return; /* only root can give a file away */
    char path[PATH_MAX], theirs[PATH_MAX];
    const char *addr = made_key("o", path, sizeof(path));
    /* Another user's key renamed over ours. */
    ck_assert_int_eq(chown(path, 65534, 65534), 0);
    key_refused(addr, path, ESTC_ERR_AUTH, "belongs to another user");
    /* A symbolic link to another user's key: the descriptor is what counts. */
    const char *addr2 = made_key("l", theirs, sizeof(theirs));
    (void)addr2;
    ck_assert_int_eq(unlink(theirs), 0);
    ck_assert_int_eq(symlink(path, theirs), 0);
    key_refused(addr2, theirs, ESTC_ERR_AUTH, "belongs to another user");
}
END_TEST

/* The file: engine keeps the last key it read or wrote decoded, to spare
 * a second decode; a file replaced since (here renamed over it, as an
 * update by another tool would) must be read again, never answered from
 * what was kept. */
START_TEST(key_replaced_after_use_is_read_again)
{
    char path[PATH_MAX], path2[PATH_MAX];
    static char addr[PATH_MAX + 16];
    snprintf(addr, sizeof(addr), "%s", made_key("r", path, sizeof(path)));
    estc_buf first = {0}, second = {0}, now = {0}, sig = {0};
    ck_assert_int_eq(estc_key_public(ctx, addr, &first), ESTC_OK);
    const char *addr2 = made_key("r2", path2, sizeof(path2));
    ck_assert_int_eq(estc_key_public(ctx, addr2, &second), ESTC_OK);
    ck_assert(first.len != second.len || memcmp(first.data, second.data, first.len) != 0);
    /* The engine last read the first key; the second is renamed over it. */
    ck_assert_int_eq(estc_key_public(ctx, addr, &now), ESTC_OK);
    ck_assert_int_eq(rename(path2, path), 0);
    estc_buf_free(&now);
    ck_assert_int_eq(estc_key_public(ctx, addr, &now), ESTC_OK);
    ck_assert_msg(now.len == second.len && memcmp(now.data, second.data, now.len) == 0,
                  "the key renamed over the file is not the one answered");
    /* And a key removed is not answered either. */
    uint8_t digest[32] = {1};
    ck_assert_int_eq(estc_key_remove(ctx, addr), ESTC_OK);
    ck_assert_int_eq(estc_key_sign(ctx, addr, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, digest,
                                   sizeof(digest), &sig),
                     ESTC_ERR_NOT_FOUND);
    estc_buf_free(&first);
    estc_buf_free(&second);
    estc_buf_free(&now);
}
END_TEST

/* ---- the CSR's public key -------------------------------------------------- */

/*
 * FAKE, for a failure a real engine cannot produce on demand: the key is
 * replaced between its generation and the CSR (a rename race in a folder
 * others can write, won 1 run in 20). The "swap:" driver keeps its keys
 * as two mem: keys: right after key_generate, key_public answers the first
 * (what was made); from then on key_public and key_sign use the second
 * (the attacker's), so the CSR is well formed and signed, with the wrong
 * key. With swap_honest set, both answer the first.
 */
static int swap_publics;
static bool swap_honest;

static const char *swap_target(bool for_public)
{
    if (swap_honest)
        return "mem:swap-made";
    if (for_public && swap_publics++ == 0)
        return "mem:swap-made";
    return "mem:swap-other";
}

static estc_err swap_generate(estc_ctx *c, void *s, const estc_address *a, estc_key_type t)
{
    (void)s;
    (void)a;
    swap_publics = 0;
    estc_err err = estc_key_generate(c, "mem:swap-made", t);
    return err == ESTC_OK ? estc_key_generate(c, "mem:swap-other", t) : err;
}

static estc_err swap_public(estc_ctx *c, void *s, const estc_address *a, estc_buf *spki)
{
    (void)s;
    (void)a;
    return estc_key_public(c, swap_target(true), spki);
}

static estc_err swap_sign(estc_ctx *c, void *s, const estc_address *a, estc_sig_alg alg,
                          estc_hash hash, const uint8_t *digest, size_t len, estc_buf *sig)
{
    (void)s;
    (void)a;
    return estc_key_sign(c, swap_target(false), alg, hash, digest, len, sig);
}

static estc_err swap_remove(estc_ctx *c, void *s, const estc_address *a)
{
    (void)s;
    (void)a;
    estc_err err = estc_key_remove(c, "mem:swap-made");
    (void)estc_key_remove(c, "mem:swap-other");
    return err;
}

static estc_err swap_exists(estc_ctx *c, void *s, const estc_address *a, estc_obj_kind k,
                            bool *found)
{
    (void)s;
    (void)a;
    return k == ESTC_OBJ_KEY ? estc_object_exists(c, "mem:swap-made", k, found)
                             : (*found = false, ESTC_OK);
}

/* An enrollment into "swap:k" against a port where no server listens:
 * returns what estc_client_enroll() returned. */
static estc_err enroll_into_swap(bool honest, char *detail, size_t size)
{
    static struct estc_driver drv;
    drv = unit_stub_driver("swap", 0);
    drv.key_generate = swap_generate;
    drv.key_public = swap_public;
    drv.key_sign = swap_sign;
    drv.key_remove = swap_remove;
    drv.exists = swap_exists;
    ck_assert_int_eq(estc_engine_register(ctx, &drv), ESTC_OK);
    swap_honest = honest;
    estc_client *c = NULL;
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    ck_assert_int_eq(estc_client_set_server(c, "coaps://127.0.0.1:9"), ESTC_OK);
    ck_assert_int_eq(estc_client_set_limits(c, 300, 0, 1), ESTC_OK);
    ck_assert_int_eq(estc_client_set_subject(c, "/CN=swap"), ESTC_OK);
    ck_assert_int_eq(estc_client_set_enrolled(c, "swap:k", "mem:swap-cert", NULL), ESTC_OK);
    estc_ctx_clear_error(ctx);
    estc_err err = estc_client_enroll(c);
    snprintf(detail, size, "%s", estc_ctx_error_detail(ctx));
    estc_client_free(c);
    return err;
}

START_TEST(csr_with_swapped_key_refused)
{
    char detail[1100];
    estc_err err = enroll_into_swap(false, detail, sizeof(detail));
    ck_assert_msg(err == ESTC_ERR_VALIDATION, "got %s: %s", estc_err_name(err), detail);
    ck_assert_msg(unit_has(detail, "not the one of the key just made"), "%s", detail);
    /* Rolled back: the key made for the enrollment is gone. */
    bool found = true;
    ck_assert_int_eq(estc_object_exists(ctx, "mem:swap-made", ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found);
}
END_TEST

/* The control: with the key unchanged the enrollment gets past the check
 * and fails only for want of a server. */
START_TEST(csr_with_made_key_passes_the_check)
{
    char detail[1100];
    estc_err err = enroll_into_swap(true, detail, sizeof(detail));
    ck_assert_msg(err != ESTC_ERR_VALIDATION && err != ESTC_OK, "got %s: %s",
                  estc_err_name(err), detail);
    ck_assert_msg(!unit_has(detail, "not the one of the key just made"), "%s", detail);
}
END_TEST

/* ---- error texts ----------------------------------------------------------- */

START_TEST(stale_openssl_error_not_reported)
{
    char path[PATH_MAX], addr[PATH_MAX + 8];
    snprintf(path, sizeof(path), "%s/garbage.pem", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not a key\n", f);
    fclose(f);
    snprintf(addr, sizeof(addr), "file:%s", path);
    /* What an earlier, unrelated call left in this thread's queue. */
    ERR_raise_data(ERR_LIB_USER, 1, "stale error of an earlier call");
    estc_buf spki = {0};
    ck_assert_int_eq(estc_key_public(ctx, addr, &spki), ESTC_ERR_NOT_FOUND);
    const char *d = estc_ctx_error_detail(ctx);
    ck_assert_msg(unit_has(d, "no PEM private key in the file"), "%s", d);
    ck_assert_msg(!unit_has(d, "lib(128)") && !unit_has(d, "reason(1)"),
                  "a stale error was reported: %s", d);
    /* A probe leaves nothing behind for the next failure to report. */
    bool found = true;
    ck_assert_int_eq(estc_object_exists(ctx, addr, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found);
    ck_assert_msg(ERR_peek_error() == 0, "the probe left an OpenSSL error in the queue");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("key swap");
    TCase *tc = unit_tcase(s, "file: key folders");
    tcase_add_checked_fixture(tc, scratch_setup, scratch_teardown);
    tcase_add_test(tc, key_folder_open_to_others_refused);
    tcase_add_test(tc, key_folder_of_own_user_accepted);
    tcase_add_test(tc, key_folder_of_other_user_refused);
    tc = unit_tcase(s, "file: key files");
    tcase_add_checked_fixture(tc, scratch_setup, scratch_teardown);
    tcase_add_test(tc, key_file_writable_by_others_refused);
    tcase_add_test(tc, key_path_fifo_refused_without_blocking);
    tcase_add_test(tc, key_file_of_other_user_refused);
    tcase_add_test(tc, key_replaced_after_use_is_read_again);
    tc = unit_tcase(s, "CSR public key");
    tcase_add_test(tc, csr_with_swapped_key_refused);
    tcase_add_test(tc, csr_with_made_key_passes_the_check);
    tc = unit_tcase(s, "error texts");
    tcase_add_checked_fixture(tc, scratch_setup, scratch_teardown);
    tcase_add_test(tc, stale_openssl_error_not_reported);
    return unit_run_in_scratch(s, "swap");
}
