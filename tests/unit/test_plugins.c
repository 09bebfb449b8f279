/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the optional drivers as plug-ins (engines/plugins/): a
 * context registers their schemes without loading anything, mem: and file:
 * work without them, the first use of a scheme loads its plug-in, and a
 * plug-in that cannot be loaded gives ESTC_ERR_UNSUPPORTED with the scheme
 * and dlerror()'s reason. estc_engine_known() knows a plug-in's scheme
 * without loading it, also when its plug-in is missing or unusable, so the
 * library takes such an address for one (and its use says why it fails)
 * rather than for a file name. ESTC_ENGINE_DIR (set by meson) is the build
 * folder's plug-ins; ESTC_UNIT_MODULE_OLD_PKCS11 a fake plug-in of an older
 * library (unit_driver_module.c).
 */
#include <estc/client.h>

#include <link.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "unit_util.h"

static const char *const heavy[] = {"estc-pkcs11.so", "estc-tpm2.so", "estc-psa.so",
                                    "libp11-kit",     "libtss2-",     "libmbedcrypto"};

static int find_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    const char **needle = arg;
    if (info->dlpi_name != NULL && strstr(info->dlpi_name, *needle) != NULL) {
        *needle = NULL;
        return 1;
    }
    return 0;
}

/* Whether a loaded object's path holds @needle. */
static bool loaded(const char *needle)
{
    const char *n = needle;
    dl_iterate_phdr(find_object, &n);
    return n == NULL;
}

struct schemes {
    char names[8][ESTC_SCHEME_MAX + 1];
    size_t n;
};

static void collect(void *arg, const struct estc_driver *drv)
{
    struct schemes *s = arg;
    if (strcmp(drv->scheme, "mem") != 0 && strcmp(drv->scheme, "file") != 0 && s->n < 8)
        snprintf(s->names[s->n++], sizeof(s->names[0]), "%s", drv->scheme);
}

START_TEST(software_use_loads_no_plugin)
{
    char dir[256];
    unit_mkdtemp(dir, sizeof(dir));
    char key[300];
    snprintf(key, sizeof(key), "file:%s/k.pem", dir);
    ck_assert_int_eq(estc_key_generate(ctx, "mem:k", ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_key_generate(ctx, key, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_uint_ne(estc_engine_caps(ctx, key) & ESTC_CAP_FILES, 0);
    const struct estc_driver *d = NULL;
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_VOLATILE, &d), ESTC_OK);
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_FILES, &d), ESTC_OK);
    /* The plug-ins' schemes are registered all the same. */
    struct schemes s = {0};
    ck_assert_int_eq(estc_engine_schemes(ctx, collect, &s), ESTC_OK);
    for (size_t i = 0; i < UNIT_ARRAY_LEN(heavy); i++)
        ck_assert_msg(!loaded(heavy[i]), "%s loaded by mem: and file: alone", heavy[i]);
    ck_assert_int_eq(estc_key_remove(ctx, key), ESTC_OK);
    unit_rm_rf(dir);
}
END_TEST

START_TEST(missing_plugin_named_with_dlerror)
{
    const char *built = getenv("ESTC_ENGINE_DIR");
    ck_assert_ptr_nonnull(built);
    char keep[1024];
    snprintf(keep, sizeof(keep), "%s", built);
    struct schemes s = {0};
    ck_assert_int_eq(estc_engine_schemes(ctx, collect, &s), ESTC_OK);
    if (s.n == 0)
        return; /* built without optional drivers */
    char empty[256];
    unit_mkdtemp(empty, sizeof(empty));
    ck_assert_int_eq(setenv("ESTC_ENGINE_DIR", empty, 1), 0);
    for (size_t i = 0; i < s.n; i++) {
        char probe[ESTC_SCHEME_MAX + 2], want[ESTC_SCHEME_MAX + 16];
        snprintf(probe, sizeof(probe), "%s:", s.names[i]);
        snprintf(want, sizeof(want), "estc-%s.so", s.names[i]);
        const struct estc_driver *d = NULL;
        /* Twice: a failed load is tried again, and fails alike. */
        for (int round = 0; round < 2; round++) {
            estc_ctx_clear_error(ctx);
            ck_assert_int_eq(estc_engine_find(ctx, probe, &d), ESTC_ERR_UNSUPPORTED);
            const char *detail = estc_ctx_error_detail(ctx);
            ck_assert_msg(unit_has(detail, probe) && unit_has(detail, "cannot be loaded") &&
                              unit_has(detail, want) && unit_has(detail, "No such file"),
                          "detail: %s", detail);
            ck_assert_uint_eq(estc_engine_caps(ctx, probe), 0);
        }
        ck_assert_msg(!loaded(want), "%s loaded", want);
    }
    /* The plug-ins as built load, on first use. */
    ck_assert_int_eq(setenv("ESTC_ENGINE_DIR", keep, 1), 0);
    for (size_t i = 0; i < s.n; i++) {
        char probe[ESTC_SCHEME_MAX + 2], want[ESTC_SCHEME_MAX + 16];
        snprintf(probe, sizeof(probe), "%s:", s.names[i]);
        snprintf(want, sizeof(want), "estc-%s.so", s.names[i]);
        const struct estc_driver *d = NULL;
        ck_assert_int_eq(estc_engine_find(ctx, probe, &d), ESTC_OK);
        ck_assert_str_eq(d->scheme, s.names[i]);
        ck_assert_ptr_nonnull(d->key_generate);
        ck_assert_msg(loaded(want), "%s not loaded", want);
    }
    unit_rm_rf(empty);
}
END_TEST

START_TEST(known_schemes_without_loading)
{
    const char *built = getenv("ESTC_ENGINE_DIR");
    ck_assert_ptr_nonnull(built);
    char keep[1024];
    snprintf(keep, sizeof(keep), "%s", built);
    struct schemes s = {0};
    ck_assert_int_eq(estc_engine_schemes(ctx, collect, &s), ESTC_OK);
    char empty[256];
    unit_mkdtemp(empty, sizeof(empty));
    /* Where the plug-ins are, and where none is: known alike, none loaded. */
    const char *dirs[] = {keep, empty};
    for (size_t d = 0; d < 2; d++) {
        ck_assert_int_eq(setenv("ESTC_ENGINE_DIR", dirs[d], 1), 0);
        for (size_t i = 0; i < s.n; i++) {
            char addr[ESTC_SCHEME_MAX + 16], upper[ESTC_SCHEME_MAX + 16],
                want[ESTC_SCHEME_MAX + 16];
            snprintf(addr, sizeof(addr), "%s:object=k", s.names[i]);
            snprintf(upper, sizeof(upper), "%s:", s.names[i]);
            for (char *p = upper; *p != '\0'; p++)
                *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
            snprintf(want, sizeof(want), "estc-%s.so", s.names[i]);
            estc_ctx_clear_error(ctx);
            ck_assert_msg(estc_engine_known(ctx, addr), "%s not known", addr);
            ck_assert_msg(estc_engine_known(ctx, upper), "%s not known", upper);
            ck_assert_str_eq(estc_ctx_error_detail(ctx), "");
            ck_assert_msg(!loaded(want), "%s loaded by estc_engine_known()", want);
        }
    }
    ck_assert_int_eq(setenv("ESTC_ENGINE_DIR", keep, 1), 0);
    ck_assert(estc_engine_known(ctx, "mem:k"));
    ck_assert(estc_engine_known(ctx, "file:/etc/key.pem"));
    ck_assert(estc_engine_known(ctx, "file:"));
    /* Not an address: an unknown scheme, a path, no scheme at all. */
    static const char *const not_addresses[] = {
        "nosuch:k", "nosuch:", "/etc/pkcs11:x", "./mem:k", "key.pem",
        "",         "mem",     "1mem:k",        "mem k:x",
    };
    for (size_t i = 0; i < UNIT_ARRAY_LEN(not_addresses); i++) {
        estc_ctx_clear_error(ctx);
        ck_assert_msg(!estc_engine_known(ctx, not_addresses[i]), "\"%s\" known", not_addresses[i]);
        ck_assert_str_eq(estc_ctx_error_detail(ctx), "");
    }
    ck_assert(!estc_engine_known(NULL, "mem:k"));
    ck_assert(!estc_engine_known(ctx, NULL));
    unit_rm_rf(empty);
}
END_TEST

/* The detail of the last error, for the messages of failed checks. */
#define DETAIL() estc_ctx_error_detail(ctx)

START_TEST(unusable_plugin_is_an_address_that_says_why)
{
    const char *built = getenv("ESTC_ENGINE_DIR");
    const char *old = getenv("ESTC_UNIT_MODULE_OLD_PKCS11");
    ck_assert_ptr_nonnull(built);
    ck_assert_ptr_nonnull(old);
    if (!estc_engine_known(ctx, "pkcs11:"))
        return; /* built without the PKCS#11 driver */
    char keep[1024], dir[256], so[300];
    snprintf(keep, sizeof(keep), "%s", built);
    unit_mkdtemp(dir, sizeof(dir));
    snprintf(so, sizeof(so), "%s/estc-pkcs11.so", dir);
    ck_assert_int_eq(symlink(old, so), 0);
    ck_assert_int_eq(setenv("ESTC_ENGINE_DIR", dir, 1), 0);

    const char *addr = "pkcs11:token=t;object=ca";
    ck_assert(estc_engine_known(ctx, addr));
    const struct estc_driver *d = NULL;
    ck_assert_int_eq(estc_engine_find(ctx, addr, &d), ESTC_ERR_DRIVER);
    ck_assert_msg(unit_has(DETAIL(), "pkcs11:") && unit_has(DETAIL(), so) &&
                      unit_has(DETAIL(), "cannot be used") &&
                      unit_has(DETAIL(), "driver API version 1"),
                  "detail: %s", DETAIL());

    /* The client takes it for an address too, not for a file name: its use
     * fails with the plug-in's reason. */
    estc_client *c = NULL;
    ck_assert_int_eq(estc_client_new(ctx, &c), ESTC_OK);
    estc_ctx_clear_error(ctx);
    ck_assert_int_eq(estc_client_add_trust_anchor(c, addr, false), ESTC_ERR_DRIVER);
    ck_assert_msg(unit_has(DETAIL(), "driver API version 1"), "detail: %s", DETAIL());
    /* An unknown scheme is a file name. */
    estc_ctx_clear_error(ctx);
    ck_assert_int_ne(estc_client_add_trust_anchor(c, "nosuch:ca", false), ESTC_OK);
    ck_assert_msg(unit_has(DETAIL(), "nosuch:ca") && !unit_has(DETAIL(), "scheme"), "detail: %s",
                  DETAIL());
    estc_client_free(c);

    ck_assert_int_eq(setenv("ESTC_ENGINE_DIR", keep, 1), 0);
    ck_assert_int_eq(unlink(so), 0);
    unit_rm_rf(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plug-ins");
    TCase *tc = unit_tcase(s, "loading");
    tcase_add_test(tc, software_use_loads_no_plugin);
    tcase_add_test(tc, missing_plugin_named_with_dlerror);
    tcase_add_test(tc, known_schemes_without_loading);
    tcase_add_test(tc, unusable_plugin_is_an_address_that_says_why);
    return unit_run(s);
}
