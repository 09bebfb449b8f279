/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of the software drivers beyond the conformance suite: file
 * permissions, atomic writes, no replace, unreadable input, and that no key
 * material reaches the log.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <check.h>

#include <estc/engine.h>

#include "../fixtures/check_main.h"

static estc_ctx *ctx;
static char dir[64];

struct log_capture {
    char text[65536];
    size_t used;
};
static struct log_capture logbuf;

static void capture(void *arg, estc_log_level level, const char *msg)
{
    struct log_capture *c = arg;
    (void)level;
    int n = snprintf(c->text + c->used, sizeof(c->text) - c->used, "%s\n", msg);
    if (n > 0 && c->used + (size_t)n < sizeof(c->text))
        c->used += (size_t)n;
}

static void setup(void)
{
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
    memset(&logbuf, 0, sizeof(logbuf));
    ck_assert_int_eq(estc_ctx_set_log(ctx, ESTC_LOG_DEBUG, capture, &logbuf), ESTC_OK);
    snprintf(dir, sizeof(dir), "/tmp/estc-sw-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static int count_entries(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void teardown(void)
{
    estc_ctx_free(ctx);
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[512];
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

START_TEST(file_key_is_private_and_not_replaced)
{
    char addr[600], path[512];
    snprintf(path, sizeof(path), "%s/device.key.pem", dir);
    snprintf(addr, sizeof(addr), "file:%s", path);
    ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_OK);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    ck_assert_int_eq(count_entries(), 1); /* no temporary file left */

    /* The file holds a PKCS#8 PEM key (OpenSSL reads it itself). */
    FILE *f = fopen(path, "r");
    char head[64] = "";
    ck_assert_ptr_nonnull(fgets(head, sizeof(head), f));
    fclose(f);
    ck_assert_str_eq(head, "-----BEGIN PRIVATE KEY-----\n");

    /* No silent replace: the old key stays byte for byte. */
    estc_buf before = {0}, after = {0};
    ck_assert_int_eq(estc_key_public(ctx, addr, &before), ESTC_OK);
    ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_ERR_EXISTS);
    ck_assert_int_eq(estc_key_public(ctx, addr, &after), ESTC_OK);
    ck_assert_uint_eq(before.len, after.len);
    ck_assert_mem_eq(before.data, after.data, before.len);
    estc_buf_free(&before);
    estc_buf_free(&after);

    /* Signing logs nothing of the key. */
    uint8_t digest[32] = {1};
    estc_buf sig = {0};
    ck_assert_int_eq(estc_key_sign(ctx, addr, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, digest, 32, &sig),
                     ESTC_OK);
    estc_buf_free(&sig);
    ck_assert_ptr_null(strstr(logbuf.text, "PRIVATE KEY"));
    ck_assert_int_eq(estc_key_remove(ctx, addr), ESTC_OK);
    ck_assert_int_eq(count_entries(), 0);
}
END_TEST

START_TEST(file_errors)
{
    char addr[600], path[512];
    /* A folder that does not exist: an I/O error naming the address. */
    ck_assert_int_eq(estc_key_generate(ctx, "file:/nonexistent-estc-dir/k.pem", ESTC_KEY_EC_P256),
                     ESTC_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "/nonexistent-estc-dir/k.pem"));
    /* Not a key: removing it as a key is refused and the file stays. */
    snprintf(path, sizeof(path), "%s/notes.txt", dir);
    FILE *f = fopen(path, "w");
    fputs("hello\n", f);
    fclose(f);
    snprintf(addr, sizeof(addr), "file:%s", path);
    ck_assert_int_eq(estc_key_remove(ctx, addr), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_cert_remove(ctx, addr), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(access(path, F_OK), 0);
    estc_buf b = {0};
    ck_assert_int_eq(estc_cert_load(ctx, addr, &b), ESTC_ERR_NOT_FOUND);
    bool found = true;
    ck_assert_int_eq(estc_object_exists(ctx, addr, ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found);
    /* A folder or a URL is not a file address. */
    ck_assert_int_eq(estc_key_generate(ctx, "file:/tmp/", ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(estc_key_generate(ctx, "file://host/x", ESTC_KEY_EC_P256),
                     ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(count_entries(), 1);
}
END_TEST

START_TEST(file_key_readable_by_openssl)
{
    /* A key written by the engine and a key written by OpenSSL are the same
     * format: the engine signs with a key that `openssl genpkey` made. */
    char cmd[700], addr[600];
    snprintf(cmd, sizeof(cmd),
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s/ossl.pem "
             "2>/dev/null",
             dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(addr, sizeof(addr), "file:%s/ossl.pem", dir);
    uint8_t digest[32] = {2};
    estc_buf sig = {0};
    ck_assert_int_eq(estc_key_sign(ctx, addr, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, digest, 32, &sig),
                     ESTC_OK);
    ck_assert_int_gt(sig.len, 60);
    estc_buf_free(&sig);
    /* Wrong algorithm for the key: refused. */
    ck_assert_int_eq(estc_key_sign(ctx, addr, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA256, digest, 32, &sig),
                     ESTC_ERR_UNSUPPORTED);
}
END_TEST

START_TEST(mem_objects_are_per_context)
{
    ck_assert_int_eq(estc_key_generate(ctx, "mem:k", ESTC_KEY_EC_P256), ESTC_OK);
    estc_ctx *other = NULL;
    ck_assert_int_eq(estc_ctx_new(&other), ESTC_OK);
    bool found = true;
    ck_assert_int_eq(estc_object_exists(other, "mem:k", ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found);
    estc_ctx_free(other);
    ck_assert_int_eq(estc_key_generate(ctx, "mem:", ESTC_KEY_EC_P256), ESTC_ERR_BAD_ADDRESS);
    /* A key and a certificate cannot share an address. */
    ck_assert_int_eq(estc_key_remove(ctx, "mem:k"), ESTC_OK);
}
END_TEST

int main(void)
{
    TCase *tc;
    /* 60 s a test: generous, valgrind runs these too. */
    Suite *s = check_suite("software drivers", "software", setup, teardown, 60, &tc);
    tcase_add_test(tc, file_key_is_private_and_not_replaced);
    tcase_add_test(tc, file_errors);
    tcase_add_test(tc, file_key_readable_by_openssl);
    tcase_add_test(tc, mem_objects_are_per_context);
    return check_run(s);
}
