/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the file helpers: estc_file_write() (all or nothing, the
 * mode, no replace without ESTC_FILE_REPLACE, no temporary file left, the
 * system's reason in the detail) and estc_address_for_file().
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#include "unit_util.h"

static char dir[1024];

/* Runs after unit_setup(): a scratch folder per test, inside the folder
 * main() made for the run (a failed test ends without its teardown; main()
 * removes what is left). */
static void files_setup(void)
{
    unit_mkdtemp(dir, sizeof(dir));
}

static void files_teardown(void)
{
    unit_rm_rf(dir);
}

/* @name inside the scratch folder. */
static const char *in_dir(const char *name)
{
    return unit_path_in(dir, name);
}

/* The whole content of @path, NUL-terminated, into @buf. */
static size_t read_all(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n;
}

static unsigned mode_of(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (unsigned)(st.st_mode & 07777);
}

static void assert_no_tmp(void)
{
    ck_assert_msg(unit_dir_count(dir, ".tmp") == 0, "a temporary file is left in %s", dir);
}

START_TEST(creates_with_mode)
{
    const unsigned modes[] = {0600, 0644, 0640, 0400, 0};
    char buf[64];
    for (size_t i = 0; i < UNIT_ARRAY_LEN(modes); i++) {
        char name[32];
        snprintf(name, sizeof(name), "f%zu", i);
        const char *path = in_dir(name);
        ck_assert_int_eq(estc_file_write(ctx, path, "hello", 5, modes[i], 0), ESTC_OK);
        ck_assert_uint_eq(mode_of(path), modes[i]);
        if (modes[i] & 0400) {
            ck_assert_uint_eq(read_all(path, buf, sizeof(buf)), 5);
            ck_assert_str_eq(buf, "hello");
        }
    }
    /* The umask has no say: the mode is set on the file itself. */
    mode_t old = umask(077);
    ck_assert_int_eq(estc_file_write(ctx, in_dir("wide"), "x", 1, 0664, 0), ESTC_OK);
    umask(old);
    ck_assert_uint_eq(mode_of(in_dir("wide")), 0664);
    ck_assert_uint_eq(unit_dir_count(dir, NULL), UNIT_ARRAY_LEN(modes) + 1);
    assert_no_tmp();
}
END_TEST

START_TEST(empty_content)
{
    char buf[8];
    ck_assert_int_eq(estc_file_write(ctx, in_dir("empty"), NULL, 0, 0600, 0), ESTC_OK);
    ck_assert_uint_eq(read_all(in_dir("empty"), buf, sizeof(buf)), 0);
    ck_assert_int_eq(estc_file_write(ctx, in_dir("empty"), "", 0, 0600, ESTC_FILE_REPLACE),
                     ESTC_OK);
    ck_assert_uint_eq(read_all(in_dir("empty"), buf, sizeof(buf)), 0);
    assert_no_tmp();
}
END_TEST

START_TEST(no_replace_without_flag)
{
    const char *path = in_dir("key.pem");
    char buf[64];
    ck_assert_int_eq(estc_file_write(ctx, path, "one", 3, 0644, 0), ESTC_OK);
    struct stat before;
    ck_assert_int_eq(stat(path, &before), 0);
    ck_assert_int_eq(estc_file_write(ctx, path, "two-two", 7, 0600, 0), ESTC_ERR_EXISTS);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "%s: the file exists already", path);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), want);
    ck_assert_uint_eq(read_all(path, buf, sizeof(buf)), 3);
    ck_assert_str_eq(buf, "one");
    struct stat after;
    ck_assert_int_eq(stat(path, &after), 0);
    ck_assert_uint_eq(after.st_ino, before.st_ino);
    ck_assert_uint_eq(after.st_mode & 07777, 0644);
    /* A NULL context only gets the code. */
    ck_assert_int_eq(estc_file_write(NULL, path, "two", 3, 0600, 0), ESTC_ERR_EXISTS);
    ck_assert_uint_eq(unit_dir_count(dir, NULL), 1);
    assert_no_tmp();
}
END_TEST

START_TEST(dangling_symlink_not_replaced)
{
    /* The name is taken even when what it points to does not exist: link()
     * refuses, and nothing is created at the target. */
    const char *link_path = in_dir("link");
    ck_assert_int_eq(symlink(in_dir("target"), link_path), 0);
    ck_assert_int_eq(estc_file_write(ctx, link_path, "x", 1, 0600, 0), ESTC_ERR_EXISTS);
    struct stat st;
    ck_assert_int_eq(lstat(link_path, &st), 0);
    ck_assert(S_ISLNK(st.st_mode));
    ck_assert_int_eq(access(in_dir("target"), F_OK), -1);
    ck_assert_uint_eq(unit_dir_count(dir, NULL), 1);
}
END_TEST

START_TEST(replace_with_flag)
{
    const char *path = in_dir("state");
    char buf[64];
    ck_assert_int_eq(estc_file_write(ctx, path, "old content", 11, 0644, 0), ESTC_OK);
    struct stat before;
    ck_assert_int_eq(stat(path, &before), 0);
    ck_assert_int_eq(estc_file_write(ctx, path, "new", 3, 0600, ESTC_FILE_REPLACE), ESTC_OK);
    ck_assert_uint_eq(read_all(path, buf, sizeof(buf)), 3);
    ck_assert_str_eq(buf, "new");
    ck_assert_uint_eq(mode_of(path), 0600);
    /* A new file renamed into place, not the old one rewritten. */
    struct stat after;
    ck_assert_int_eq(stat(path, &after), 0);
    ck_assert_uint_ne(after.st_ino, before.st_ino);
    /* The flag does not require an existing file. */
    ck_assert_int_eq(estc_file_write(ctx, in_dir("fresh"), "f", 1, 0600, ESTC_FILE_REPLACE),
                     ESTC_OK);
    ck_assert_uint_eq(unit_dir_count(dir, NULL), 2);
    assert_no_tmp();
}
END_TEST

START_TEST(missing_folder)
{
    const char *path = in_dir("nope/f");
    ck_assert_int_eq(estc_file_write(ctx, path, "x", 1, 0600, 0), ESTC_ERR_NOT_FOUND);
    const char *detail = estc_ctx_error_detail(ctx);
    ck_assert_msg(unit_has(detail, path), "%s", detail);
    ck_assert_msg(unit_has(detail, strerror(ENOENT)), "%s", detail);
    ck_assert_int_eq(estc_file_write(ctx, path, "x", 1, 0600, ESTC_FILE_REPLACE),
                     ESTC_ERR_NOT_FOUND);
    ck_assert_uint_eq(unit_dir_count(dir, NULL), 0);
}
END_TEST

START_TEST(replace_onto_folder_fails_clean)
{
    /* rename() over a folder fails after the temporary file was written: it
     * must be removed, and the folder left alone. */
    const char *sub = in_dir("sub");
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    ck_assert_int_eq(estc_file_write(ctx, sub, "x", 1, 0600, ESTC_FILE_REPLACE), ESTC_ERR_IO);
    const char *detail = estc_ctx_error_detail(ctx);
    ck_assert_msg(unit_has(detail, "rename"), "%s", detail);
    ck_assert_msg(unit_has(detail, strerror(EISDIR)), "%s", detail);
    struct stat st;
    ck_assert_int_eq(stat(sub, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));
    ck_assert_uint_eq(unit_dir_count(dir, NULL), 1);
    assert_no_tmp();
    /* Without the flag the name is simply taken. */
    ck_assert_int_eq(estc_file_write(ctx, sub, "x", 1, 0600, 0), ESTC_ERR_EXISTS);
    assert_no_tmp();
}
END_TEST

START_TEST(unwritable_folder)
{
    if (geteuid() == 0)
        return; /* root writes anywhere: nothing to see */
    const char *ro = in_dir("ro");
    ck_assert_int_eq(mkdir(ro, 0500), 0);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/f", ro);
    ck_assert_int_eq(estc_file_write(ctx, path, "x", 1, 0600, 0), ESTC_ERR_AUTH);
    ck_assert(unit_has(estc_ctx_error_detail(ctx), strerror(EACCES)));
    ck_assert_uint_eq(unit_dir_count(ro, NULL), 0);
    chmod(ro, 0700);
}
END_TEST

START_TEST(write_arguments)
{
    const char *path = in_dir("f");
    ck_assert_int_eq(estc_file_write(ctx, NULL, "x", 1, 0600, 0), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_file_write(ctx, "", "x", 1, 0600, 0), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_file_write(ctx, path, NULL, 1, 0600, 0), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_file_write(ctx, path, "x", 1, 01600, 0), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_file_write(ctx, path, "x", 1, 04755, 0), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_file_write(ctx, path, "x", 1, 0600, 2), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_file_write(ctx, path, "x", 1, 0600, ESTC_FILE_REPLACE | 0x80),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_uint_eq(unit_dir_count(dir, NULL), 0);
}
END_TEST

START_TEST(large_content)
{
    size_t len = 3 * 1024 * 1024 + 17;
    char *data = malloc(len);
    ck_assert_ptr_nonnull(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (char)(i * 31 + 7);
    const char *path = in_dir("big");
    ck_assert_int_eq(estc_file_write(ctx, path, data, len, 0600, 0), ESTC_OK);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq((size_t)st.st_size, len);
    char *back = malloc(len + 1);
    ck_assert_ptr_nonnull(back);
    ck_assert_uint_eq(read_all(path, back, len + 1), len);
    ck_assert_int_eq(memcmp(back, data, len), 0);
    free(back);
    free(data);
    assert_no_tmp();
}
END_TEST

/* ---- estc_address_for_file ------------------------------------------------ */

START_TEST(address_for_absolute_path)
{
    char *addr = NULL;
    ck_assert_int_eq(estc_address_for_file(ctx, "/var/lib/estc/key.pem", &addr), ESTC_OK);
    ck_assert_str_eq(addr, "file:/var/lib/estc/key.pem");
    /* The file: engine takes it back to the same path. */
    char *path = NULL;
    ck_assert_int_eq(estc_key_file_path(ctx, addr, &path), ESTC_OK);
    ck_assert_str_eq(path, "/var/lib/estc/key.pem");
    free(path);
    free(addr);
}
END_TEST

START_TEST(address_for_relative_path)
{
    char old[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(old, sizeof(old)));
    ck_assert_int_eq(chdir(dir), 0);
    char cwd[PATH_MAX]; /* the folder as the system names it (no symbolic links) */
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    char *a1 = NULL, *a2 = NULL;
    ck_assert_int_eq(estc_address_for_file(ctx, "key.pem", &a1), ESTC_OK);
    ck_assert_int_eq(estc_address_for_file(ctx, "sub/cert.pem", &a2), ESTC_OK);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof(want), "file:%s/key.pem", cwd);
    ck_assert_str_eq(a1, want);
    snprintf(want, sizeof(want), "file:%s/sub/cert.pem", cwd);
    ck_assert_str_eq(a2, want);
    /* The address works from anywhere: a key made through it lands in the
     * scratch folder even after moving away. */
    ck_assert_int_eq(chdir("/"), 0);
    ck_assert_int_eq(estc_key_generate(ctx, a1, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(chdir(old), 0);
    ck_assert_uint_eq(mode_of(in_dir("key.pem")), 0600);
    assert_no_tmp();
    free(a1);
    free(a2);
}
END_TEST

START_TEST(address_for_file_arguments)
{
    char *addr = (char *)"keep";
    ck_assert_int_eq(estc_address_for_file(NULL, "/x", &addr), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_for_file(ctx, NULL, &addr), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_for_file(ctx, "", &addr), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_for_file(ctx, "/x", NULL), ESTC_ERR_INVALID_ARG);
    /* Over-long. */
    char *huge = malloc(ESTC_ADDRESS_MAX + 8);
    ck_assert_ptr_nonnull(huge);
    huge[0] = '/';
    memset(huge + 1, 'p', ESTC_ADDRESS_MAX);
    huge[ESTC_ADDRESS_MAX] = '\0';
    ck_assert_int_eq(estc_address_for_file(ctx, huge, &addr), ESTC_ERR_BAD_ADDRESS);
    ck_assert(unit_has(estc_ctx_error_detail(ctx), "/pppppppp"));
    free(huge);
    ck_assert_str_eq(addr, "keep");
}
END_TEST

START_TEST(address_for_file_first_files_engine)
{
    /* Another engine with ESTC_CAP_FILES registered later does not take
     * over: the first in registration order answers. */
    static struct estc_driver d;
    d = unit_stub_driver("afiles", ESTC_CAP_FILES);
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    char *addr = NULL;
    ck_assert_int_eq(estc_address_for_file(ctx, "/k.pem", &addr), ESTC_OK);
    ck_assert_str_eq(addr, "file:/k.pem");
    free(addr);
}
END_TEST

START_TEST(address_for_relative_path_at_limit)
{
    /* A relative path whose address is exactly ESTC_ADDRESS_MAX bytes is
     * accepted, one byte more is refused. */
    char old[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(old, sizeof(old)));
    ck_assert_int_eq(chdir(dir), 0);
    char cwd[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    size_t fixed = strlen("file:") + strlen(cwd) + 1;
    size_t n = ESTC_ADDRESS_MAX - fixed;
    char *rel = malloc(n + 2);
    ck_assert_ptr_nonnull(rel);
    memset(rel, 'r', n + 1);
    rel[n] = '\0';
    char *addr = NULL;
    ck_assert_int_eq(estc_address_for_file(ctx, rel, &addr), ESTC_OK);
    ck_assert_uint_eq(strlen(addr), ESTC_ADDRESS_MAX);
    free(addr);
    addr = NULL;
    rel[n] = 'r';
    rel[n + 1] = '\0';
    ck_assert_int_eq(estc_address_for_file(ctx, rel, &addr), ESTC_ERR_BAD_ADDRESS);
    ck_assert_ptr_null(addr);
    free(rel);
    ck_assert_int_eq(chdir(old), 0);
}
END_TEST

/* ---- regressions: each of these failed before its fix ------------------ */

/*
 * Regression (engines/files.c estc_address_for_file): the current folder
 * and the relative path are joined with a '/' even when the folder is "/",
 * so in the root folder "x.pem" becomes "file://x.pem", which the file:
 * engine refuses as a URL ("file: needs a file path").
 */
START_TEST(regression_address_for_file_in_root_folder)
{
    char old[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(old, sizeof(old)));
    ck_assert_int_eq(chdir("/"), 0);
    char *addr = NULL;
    estc_err err = estc_address_for_file(ctx, "x.pem", &addr);
    ck_assert_int_eq(chdir(old), 0);
    ck_assert_int_eq(err, ESTC_OK);
    char shown[64];
    snprintf(shown, sizeof(shown), "%s", addr);
    char *path = NULL;
    err = estc_key_file_path(ctx, addr, &path);
    free(addr);
    ck_assert_msg(strcmp(shown, "file:/x.pem") == 0, "address \"%s\" (the file: engine says: %s)",
                  shown, err == ESTC_OK ? "fine" : estc_ctx_error_detail(ctx));
    ck_assert_int_eq(err, ESTC_OK);
    ck_assert_str_eq(path, "/x.pem");
    free(path);
}
END_TEST

/*
 * Regression (engines/files.c estc_address_for_file): the length check
 * counts the '/' that joins the current folder and the path even for an
 * absolute path, where no folder and no '/' are added, so an absolute path
 * whose address is exactly ESTC_ADDRESS_MAX bytes is refused as too long
 * (the relative case above is right).
 */
START_TEST(regression_address_for_absolute_path_at_limit)
{
    size_t n = ESTC_ADDRESS_MAX - strlen("file:");
    char *abs_path = malloc(n + 1);
    ck_assert_ptr_nonnull(abs_path);
    abs_path[0] = '/';
    memset(abs_path + 1, 'a', n - 1);
    abs_path[n] = '\0';
    char *addr = NULL;
    estc_err err = estc_address_for_file(ctx, abs_path, &addr);
    free(abs_path);
    ck_assert_msg(err == ESTC_OK, "a %d-byte address refused: %s", ESTC_ADDRESS_MAX,
                  estc_err_name(err));
    ck_assert_uint_eq(strlen(addr), ESTC_ADDRESS_MAX);
    char scheme[ESTC_SCHEME_MAX + 1];
    ck_assert_int_eq(estc_address_scheme(addr, scheme), ESTC_OK); /* a valid address */
    free(addr);
}
END_TEST

/*
 * Regression (engines/files.c estc_address_for_file): the refusal of an
 * over-long path is "<path>: the path is too long", but any path refused
 * here is over 1000 bytes and the detail text holds 511, so the reason is
 * always cut off and the user sees only the start of a path.
 */
START_TEST(regression_address_for_file_too_long_reason_cut)
{
    char *huge = malloc(ESTC_ADDRESS_MAX + 8);
    ck_assert_ptr_nonnull(huge);
    huge[0] = '/';
    memset(huge + 1, 'p', ESTC_ADDRESS_MAX);
    huge[ESTC_ADDRESS_MAX] = '\0';
    char *addr = NULL;
    ck_assert_int_eq(estc_address_for_file(ctx, huge, &addr), ESTC_ERR_BAD_ADDRESS);
    free(huge);
    ck_assert_msg(unit_has(estc_ctx_error_detail(ctx), "too long"),
                  "the detail does not say why: \"%.40s...\"", estc_ctx_error_detail(ctx));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("files");
    TCase *tc = unit_tcase(s, "estc_file_write");
    tcase_add_checked_fixture(tc, files_setup, files_teardown);
    tcase_add_test(tc, creates_with_mode);
    tcase_add_test(tc, empty_content);
    tcase_add_test(tc, no_replace_without_flag);
    tcase_add_test(tc, dangling_symlink_not_replaced);
    tcase_add_test(tc, replace_with_flag);
    tcase_add_test(tc, missing_folder);
    tcase_add_test(tc, replace_onto_folder_fails_clean);
    tcase_add_test(tc, unwritable_folder);
    tcase_add_test(tc, write_arguments);
    tcase_add_test(tc, large_content);
    tc = unit_tcase(s, "estc_address_for_file");
    tcase_add_checked_fixture(tc, files_setup, files_teardown);
    tcase_add_test(tc, address_for_absolute_path);
    tcase_add_test(tc, address_for_relative_path);
    tcase_add_test(tc, address_for_file_arguments);
    tcase_add_test(tc, address_for_file_first_files_engine);
    tcase_add_test(tc, address_for_relative_path_at_limit);
    tc = unit_tcase(s, "regressions");
    tcase_add_test(tc, regression_address_for_file_in_root_folder);
    tcase_add_test(tc, regression_address_for_absolute_path_at_limit);
    tcase_add_test(tc, regression_address_for_file_too_long_reason_cut);
    return unit_run_in_scratch(s, "files");
}
