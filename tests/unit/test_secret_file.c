/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the one reader of files holding secrets,
 * estc__read_secret_file() (engines/util.c, built into this test as into the
 * drivers): which modes each policy takes and refuses, symbolic links, FIFOs
 * (refused without blocking: an alarm fails a test that hangs), folders,
 * devices, files of another user, the size bound with and without a trailing newline, and that no
 * detail text ever shows the content.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>

#include "unit_util.h"
#include "util.h"

#define SECRET "s3cr3t-Value"

static char dir[1024];

static void secret_setup(void)
{
    unit_mkdtemp(dir, sizeof(dir));
    /* A FIFO that blocked the reader would stall the test: fail it instead
     * (the default action of SIGALRM ends the test's process). */
    alarm(20);
}

static void secret_teardown(void)
{
    alarm(0);
    unit_rm_rf(dir);
}

/* @name inside the scratch folder. */
static const char *in_dir(const char *name)
{
    return unit_path_in(dir, name);
}

/* Makes file @name with @content and @mode (set after writing, umask aside). */
static const char *make_file(const char *name, const char *content, mode_t mode)
{
    const char *path = in_dir(name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    size_t len = strlen(content);
    ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
    ck_assert_int_eq(close(fd), 0);
    ck_assert_int_eq(chmod(path, mode), 0);
    return path;
}

static estc_err read_secret(const char *path, size_t max, estc_buf *out)
{
    return estc__read_secret_file(ctx, "test:", "the secret", path, ESTC__FILE_SECRET, max, out);
}

/* The reader refuses @path under @policy with @want and a detail naming the
 * file and @rule, without the content; @out stays empty. */
static void refused(const char *path, enum estc__file_policy policy, estc_err want,
                    const char *rule)
{
    estc_buf out = {0};
    estc_err err = estc__read_secret_file(ctx, "test:", "the secret", path, policy, 64, &out);
    const char *detail = estc_ctx_error_detail(ctx);
    ck_assert_msg(err == want, "%s: got %s, want %s (%s)", path, estc_err_name(err),
                  estc_err_name(want), detail);
    ck_assert_msg(unit_has(detail, path) && unit_has(detail, rule), "%s: %s", path, detail);
    ck_assert_msg(!unit_has(detail, SECRET), "the content in the detail: %s", detail);
    ck_assert_ptr_null(out.data);
    ck_assert_uint_eq(out.len, 0);
}

START_TEST(secret_modes_taken)
{
    static const mode_t ok[] = {0600, 0400, 0640, 0440, 0700};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(ok); i++) {
        char name[32];
        snprintf(name, sizeof(name), "ok-%04o", (unsigned)ok[i]);
        const char *path = make_file(name, SECRET, ok[i]);
        estc_buf out = {0};
        estc_err err = read_secret(path, 64, &out);
        ck_assert_msg(err == ESTC_OK, "%04o: %s", (unsigned)ok[i], estc_ctx_error_detail(ctx));
        ck_assert_uint_eq(out.len, strlen(SECRET));
        ck_assert_mem_eq(out.data, SECRET, out.len);
        ck_assert_int_eq(out.data[out.len], '\0');
        estc_buf_free(&out);
    }
}
END_TEST

START_TEST(secret_modes_refused)
{
    /* Any permission for others, or write for the group. */
    static const struct {
        mode_t mode;
        const char *rule;
    } bad[] = {
        {0644, "open to others (mode 0644)"},        {0604, "open to others (mode 0604)"},
        {0602, "open to others (mode 0602)"},        {0601, "open to others (mode 0601)"},
        {0606, "open to others (mode 0606)"},        {0620, "writable by its group (mode 0620)"},
        {0660, "writable by its group (mode 0660)"}, {0420, "writable by its group (mode 0420)"},
    };
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        char name[32];
        snprintf(name, sizeof(name), "bad-%04o", (unsigned)bad[i].mode);
        const char *path = make_file(name, SECRET, bad[i].mode);
        refused(path, ESTC__FILE_SECRET, ESTC_ERR_AUTH, bad[i].rule);
    }
}
END_TEST

START_TEST(symlink_refused)
{
    const char *target = make_file("target", SECRET, 0600);
    const char *link = in_dir("link");
    ck_assert_int_eq(symlink(target, link), 0);
    refused(link, ESTC__FILE_SECRET, ESTC_ERR_AUTH, "is a symbolic link");
    refused(link, ESTC__FILE_UNWRITABLE, ESTC_ERR_AUTH, "is a symbolic link");
    /* A dangling one says the same. */
    const char *dangling = in_dir("dangling");
    ck_assert_int_eq(symlink(in_dir("nowhere"), dangling), 0);
    refused(dangling, ESTC__FILE_SECRET, ESTC_ERR_AUTH, "is a symbolic link");
}
END_TEST

START_TEST(fifo_refused_without_blocking)
{
    const char *fifo = in_dir("fifo");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    refused(fifo, ESTC__FILE_SECRET, ESTC_ERR_AUTH, "not a regular file (a FIFO)");
    refused(fifo, ESTC__FILE_UNWRITABLE, ESTC_ERR_FORMAT, "not a regular file (a FIFO)");
}
END_TEST

START_TEST(other_kinds_refused)
{
    const char *sub = in_dir("sub");
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    refused(sub, ESTC__FILE_SECRET, ESTC_ERR_AUTH, "not a regular file (a folder)");
    refused("/dev/null", ESTC__FILE_SECRET, ESTC_ERR_AUTH, "not a regular file (a device)");
    refused("/dev/zero", ESTC__FILE_UNWRITABLE, ESTC_ERR_FORMAT, "not a regular file (a device)");
    refused(in_dir("missing"), ESTC__FILE_SECRET, ESTC_ERR_AUTH, "No such file");
    refused(in_dir("missing"), ESTC__FILE_UNWRITABLE, ESTC_ERR_NOT_FOUND, "No such file");
}
END_TEST

START_TEST(newline_and_size)
{
    estc_buf out = {0};
    /* One trailing newline dropped, "\n" or "\r\n"; not two. */
    ck_assert_int_eq(read_secret(make_file("nl", "abc\n", 0600), 64, &out), ESTC_OK);
    ck_assert_uint_eq(out.len, 3);
    ck_assert_mem_eq(out.data, "abc", 3);
    estc_buf_free(&out);
    ck_assert_int_eq(read_secret(make_file("crlf", "abc\r\n", 0600), 64, &out), ESTC_OK);
    ck_assert_uint_eq(out.len, 3);
    estc_buf_free(&out);
    ck_assert_int_eq(read_secret(make_file("two", "abc\n\n", 0600), 64, &out), ESTC_OK);
    ck_assert_uint_eq(out.len, 4);
    estc_buf_free(&out);
    ck_assert_int_eq(read_secret(make_file("empty", "", 0600), 64, &out), ESTC_OK);
    ck_assert_uint_eq(out.len, 0);
    ck_assert_ptr_nonnull(out.data);
    estc_buf_free(&out);
    /* At most @max bytes, the newline aside. */
    ck_assert_int_eq(read_secret(make_file("max", "12345678", 0600), 8, &out), ESTC_OK);
    ck_assert_uint_eq(out.len, 8);
    estc_buf_free(&out);
    ck_assert_int_eq(read_secret(make_file("max-crlf", "12345678\r\n", 0600), 8, &out), ESTC_OK);
    ck_assert_uint_eq(out.len, 8);
    estc_buf_free(&out);
    const char *long9 = make_file("long", "123456789", 0600);
    ck_assert_int_eq(read_secret(long9, 8, &out), ESTC_ERR_AUTH);
    ck_assert(unit_has(estc_ctx_error_detail(ctx), "too long (at most 8 bytes)"));
    ck_assert(!unit_has(estc_ctx_error_detail(ctx), "123456789"));
    ck_assert_ptr_null(out.data);
    /* The key blob policy reads the bytes as they are. */
    ck_assert_int_eq(estc__read_secret_file(ctx, "test:", "the key file",
                                            make_file("kf", "ab\n", 0644), ESTC__FILE_UNWRITABLE, 8,
                                            &out),
                     ESTC_OK);
    ck_assert_uint_eq(out.len, 3);
    estc_buf_free(&out);
    ck_assert_int_eq(
        estc__read_secret_file(ctx, "test:", "the key file", long9, ESTC__FILE_UNWRITABLE, 8, &out),
        ESTC_ERR_FORMAT);
}
END_TEST

START_TEST(unwritable_modes)
{
    static const mode_t ok[] = {0600, 0644, 0444, 0640};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(ok); i++) {
        char name[32];
        snprintf(name, sizeof(name), "kf-%04o", (unsigned)ok[i]);
        estc_buf out = {0};
        ck_assert_msg(estc__read_secret_file(ctx, "test:", "the key file",
                                             make_file(name, "key", ok[i]), ESTC__FILE_UNWRITABLE,
                                             64, &out) == ESTC_OK,
                      "%04o: %s", (unsigned)ok[i], estc_ctx_error_detail(ctx));
        estc_buf_free(&out);
    }
    static const mode_t bad[] = {0664, 0620, 0602, 0666};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        char name[32], rule[64];
        snprintf(name, sizeof(name), "kf-bad-%04o", (unsigned)bad[i]);
        snprintf(rule, sizeof(rule), "writable by group or others (mode %04o)", (unsigned)bad[i]);
        refused(make_file(name, SECRET, bad[i]), ESTC__FILE_UNWRITABLE, ESTC_ERR_AUTH, rule);
    }
}
END_TEST

START_TEST(other_owner_refused)
{
    if (geteuid() != 0)
        return; /* only root can give a file away */
    /* Another user can change a file of theirs whatever its mode: neither a
     * secret nor a key file of theirs is taken (root's files are). */
    const char *secret = make_file("theirs", SECRET, 0600);
    ck_assert_int_eq(chown(secret, 65534, 65534), 0);
    refused(secret, ESTC__FILE_SECRET, ESTC_ERR_AUTH, "belongs to another user (uid 65534)");
    const char *kf = make_file("theirs.key", SECRET, 0644);
    ck_assert_int_eq(chown(kf, 65534, 65534), 0);
    refused(kf, ESTC__FILE_UNWRITABLE, ESTC_ERR_AUTH, "belongs to another user (uid 65534)");
    estc_buf out = {0};
    ck_assert_int_eq(chown(secret, 0, 65534), 0);
    ck_assert_int_eq(read_secret(secret, 64, &out), ESTC_OK);
    estc_buf_free(&out);
}
END_TEST

START_TEST(arguments)
{
    estc_buf out = {0};
    const char *path = make_file("a", SECRET, 0600);
    ck_assert_int_eq(estc__read_secret_file(ctx, NULL, "x", path, ESTC__FILE_SECRET, 8, &out),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__read_secret_file(ctx, "t", "x", NULL, ESTC__FILE_SECRET, 8, &out),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__read_secret_file(ctx, "t", "x", path, ESTC__FILE_SECRET, 8, NULL),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(
        estc__read_secret_file(ctx, "t", "x", path, (enum estc__file_policy)7, 8, &out),
        ESTC_ERR_INVALID_ARG);
    /* file: URIs name plain paths. */
    ck_assert_str_eq(estc__file_uri_path("file:///etc/pin"), "/etc/pin");
    ck_assert_str_eq(estc__file_uri_path("file:/etc/pin"), "/etc/pin");
    ck_assert_str_eq(estc__file_uri_path("/etc/pin"), "/etc/pin");
    ck_assert_str_eq(estc__file_uri_path("pin"), "pin");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("secret files");
    TCase *tc = unit_tcase(s, "estc__read_secret_file");
    tcase_add_checked_fixture(tc, secret_setup, secret_teardown);
    tcase_add_test(tc, secret_modes_taken);
    tcase_add_test(tc, secret_modes_refused);
    tcase_add_test(tc, symlink_refused);
    tcase_add_test(tc, fifo_refused_without_blocking);
    tcase_add_test(tc, other_kinds_refused);
    tcase_add_test(tc, newline_and_size);
    tcase_add_test(tc, unwritable_modes);
    tcase_add_test(tc, other_owner_refused);
    tcase_add_test(tc, arguments);
    return unit_run_in_scratch(s, "secret-file");
}
