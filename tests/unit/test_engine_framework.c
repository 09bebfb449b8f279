/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the engine framework: error texts, address parsing, the
 * driver registry, dispatch checks, generators, the lifecycle record and
 * logging.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include <estc/engine.h>

static estc_ctx *ctx;

static void setup(void)
{
    ck_assert_int_eq(estc_ctx_new(&ctx), ESTC_OK);
}

static void teardown(void)
{
    estc_ctx_free(ctx);
    ctx = NULL;
}

START_TEST(every_error_has_text)
{
    for (int e = 0; e < ESTC_ERR_COUNT; e++) {
        ck_assert_ptr_nonnull(estc_strerror((estc_err)e));
        ck_assert_str_ne(estc_strerror((estc_err)e), "unknown error");
        ck_assert_str_ne(estc_err_name((estc_err)e), "ESTC_ERR_?");
        for (int f = 0; f < e; f++)
            ck_assert_str_ne(estc_strerror((estc_err)e), estc_strerror((estc_err)f));
    }
    ck_assert_str_eq(estc_strerror((estc_err)ESTC_ERR_COUNT), "unknown error");
    ck_assert_str_eq(estc_strerror((estc_err)-1), "unknown error");
    ck_assert_str_eq(estc_err_name(ESTC_ERR_NOT_FOUND), "ESTC_ERR_NOT_FOUND");
}
END_TEST

START_TEST(scheme_parsing)
{
    char s[ESTC_SCHEME_MAX + 1];
    ck_assert_int_eq(estc_address_scheme("PKCS11:token=x", s), ESTC_OK);
    ck_assert_str_eq(s, "pkcs11");
    ck_assert_int_eq(estc_address_scheme("a+b.c-d:", s), ESTC_OK);
    ck_assert_str_eq(s, "a+b.c-d");
    const char *bad[] = {"", "x", ":x", "1x:y", "a b:c", "a\nb:c", "x:\x01", "é:x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_int_eq(estc_address_scheme(bad[i], s), ESTC_ERR_BAD_ADDRESS);
    char longscheme[64];
    memset(longscheme, 'a', 40);
    strcpy(longscheme + 40, ":x");
    ck_assert_int_eq(estc_address_scheme(longscheme, s), ESTC_ERR_BAD_ADDRESS);
    char *huge = malloc(ESTC_ADDRESS_MAX + 2);
    ck_assert_ptr_nonnull(huge);
    memcpy(huge, "mem:", 4);
    memset(huge + 4, 'z', ESTC_ADDRESS_MAX - 4);
    huge[ESTC_ADDRESS_MAX] = '\0';
    ck_assert_int_eq(estc_address_scheme(huge, s), ESTC_OK); /* exactly the maximum */
    huge[ESTC_ADDRESS_MAX] = 'z';
    huge[ESTC_ADDRESS_MAX + 1] = '\0';
    ck_assert_int_eq(estc_address_scheme(huge, s), ESTC_ERR_BAD_ADDRESS);
    free(huge);
    ck_assert_int_eq(estc_address_scheme(NULL, s), ESTC_ERR_INVALID_ARG);
}
END_TEST

START_TEST(attribute_parsing)
{
    const char *a =
        "pkcs11:token=My%20Token;object=key;id=%01%00%ff?module-path=/x.so&pin-value=12";
    char *v = NULL;
    size_t n = 0;
    ck_assert_int_eq(estc_address_attr(a, "token", &v, &n), ESTC_OK);
    ck_assert_str_eq(v, "My Token");
    ck_assert_uint_eq(n, 8);
    free(v);
    ck_assert_int_eq(estc_address_attr(a, "id", &v, &n), ESTC_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_mem_eq(v, "\x01\x00\xff", 3);
    free(v);
    ck_assert_int_eq(estc_address_attr(a, "module-path", &v, NULL), ESTC_OK);
    ck_assert_str_eq(v, "/x.so");
    free(v);
    ck_assert_int_eq(estc_address_attr(a, "pin-value", &v, NULL), ESTC_OK);
    ck_assert_str_eq(v, "12");
    free(v);
    /* A name that is only a prefix of another is not a match. */
    ck_assert_int_eq(estc_address_attr(a, "tok", &v, NULL), ESTC_ERR_NOT_FOUND);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(estc_address_attr("x:a=1;a=2", "a", &v, NULL), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(estc_address_attr("x:a=%4", "a", &v, NULL), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(estc_address_attr("x:a=%zz", "a", &v, NULL), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(estc_address_attr("x:a=%", "a", &v, NULL), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(estc_address_attr("x:a=", "a", &v, &n), ESTC_OK);
    ck_assert_uint_eq(n, 0);
    free(v);
    ck_assert_int_eq(estc_address_attr("nocolon", "a", &v, NULL), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(estc_address_attr("x:a=1", "", &v, NULL), ESTC_ERR_INVALID_ARG);
}
END_TEST

/* ---- registry --------------------------------------------------------- */

static estc_err nop_gen(estc_ctx *c, void *s, const estc_address *a, estc_key_type t)
{
    (void)c, (void)s, (void)a, (void)t;
    return ESTC_ERR_UNSUPPORTED;
}
static estc_err nop_pub(estc_ctx *c, void *s, const estc_address *a, estc_buf *b)
{
    (void)c, (void)s, (void)a, (void)b;
    return ESTC_ERR_NOT_FOUND;
}
static estc_err nop_sign(estc_ctx *c, void *s, const estc_address *a, estc_sig_alg al, estc_hash h,
                         const uint8_t *d, size_t l, estc_buf *b)
{
    (void)c, (void)s, (void)a, (void)al, (void)h, (void)d, (void)l, (void)b;
    return ESTC_ERR_NOT_FOUND;
}
static estc_err nop_rm(estc_ctx *c, void *s, const estc_address *a)
{
    (void)c, (void)s, (void)a;
    return ESTC_ERR_NOT_FOUND;
}
static estc_err nop_store(estc_ctx *c, void *s, const estc_address *a, estc_obj_kind k, const uint8_t *d,
                          size_t l)
{
    (void)c, (void)s, (void)a, (void)k, (void)d, (void)l;
    return ESTC_ERR_UNSUPPORTED;
}
static estc_err nop_list(estc_ctx *c, void *s, const estc_address *p, estc_obj_kind k, estc_list_fn f,
                         void *arg)
{
    (void)c, (void)s, (void)p, (void)k, (void)f, (void)arg;
    return ESTC_OK;
}
static estc_err nop_exists(estc_ctx *c, void *s, const estc_address *a, estc_obj_kind k, bool *found)
{
    (void)c, (void)s, (void)a, (void)k;
    *found = false;
    return ESTC_OK;
}
static estc_err nop_derive(estc_ctx *c, void *s, const estc_address *p, estc_obj_kind k, const char *n,
                           char **out)
{
    (void)c, (void)s, (void)p, (void)k, (void)n;
    *out = strdup("nop:x");
    return *out != NULL ? ESTC_OK : ESTC_ERR_NOMEM;
}

static int init_calls, cleanup_calls;
static estc_err count_init(estc_ctx *c, void *s)
{
    (void)c;
    ck_assert_ptr_nonnull(s); /* state_size > 0: zeroed state */
    ck_assert_int_eq(*(int *)s, 0);
    init_calls++;
    return ESTC_OK;
}
static void count_cleanup(estc_ctx *c, void *s)
{
    (void)c, (void)s;
    cleanup_calls++;
}

static struct estc_driver nop_driver(const char *scheme)
{
    return (struct estc_driver){.api_version = ESTC_DRIVER_API_VERSION,
                                .scheme = scheme,
                                .description = "test",
                                .state_size = sizeof(int),
                                .init = count_init,
                                .cleanup = count_cleanup,
                                .key_generate = nop_gen,
                                .key_public = nop_pub,
                                .key_sign = nop_sign,
                                .key_remove = nop_rm,
                                .cert_store = nop_store,
                                .cert_load = nop_pub,
                                .cert_remove = nop_rm,
                                .list = nop_list,
                                .exists = nop_exists,
                                .address_derive = nop_derive};
}

START_TEST(registry_rules)
{
    static struct estc_driver d, dup, bad;
    d = nop_driver("nop");
    init_calls = cleanup_calls = 0;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    ck_assert_int_eq(init_calls, 1);
    const struct estc_driver *found = NULL;
    ck_assert_int_eq(estc_engine_find(ctx, "NOP:whatever", &found), ESTC_OK);
    ck_assert_ptr_eq(found, &d);

    /* Registering a scheme twice is an error, not a silent replace. */
    dup = nop_driver("nop");
    ck_assert_int_eq(estc_engine_register(ctx, &dup), ESTC_ERR_EXISTS);
    ck_assert_int_eq(estc_engine_find(ctx, "nop:", &found), ESTC_OK);
    ck_assert_ptr_eq(found, &d);
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_EXISTS);
    ck_assert_int_eq(init_calls, 1);

    /* The built-in schemes are taken too. */
    bad = nop_driver("mem");
    ck_assert_int_eq(estc_engine_register(ctx, &bad), ESTC_ERR_EXISTS);

    bad = nop_driver("other");
    bad.api_version = ESTC_DRIVER_API_VERSION + 1;
    ck_assert_int_eq(estc_engine_register(ctx, &bad), ESTC_ERR_DRIVER);
    bad = nop_driver("other");
    bad.key_sign = NULL;
    ck_assert_int_eq(estc_engine_register(ctx, &bad), ESTC_ERR_DRIVER);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "key_sign"));
    const char *bad_schemes[] = {"", "Upper", "with:colon", "sp ace", NULL};
    for (int i = 0; i < 5; i++) {
        bad = nop_driver(bad_schemes[i]);
        ck_assert_int_eq(estc_engine_register(ctx, &bad), ESTC_ERR_DRIVER);
    }
    ck_assert_int_eq(estc_engine_find(ctx, "other:x", &found), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_int_eq(estc_engine_register(NULL, &d), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_engine_register(ctx, NULL), ESTC_ERR_INVALID_ARG);

    estc_ctx_free(ctx);
    ctx = NULL;
    ck_assert_int_eq(cleanup_calls, 1);
}
END_TEST

static void count_scheme(void *arg, const struct estc_driver *drv)
{
    (void)drv;
    (*(int *)arg)++;
}

START_TEST(builtin_schemes_present)
{
    const struct estc_driver *drv;
    ck_assert_int_eq(estc_engine_find(ctx, "mem:", &drv), ESTC_OK);
    ck_assert_str_eq(drv->scheme, "mem");
    ck_assert_int_eq(estc_engine_find(ctx, "file:", &drv), ESTC_OK);
    int n = 0;
    ck_assert_int_eq(estc_engine_schemes(ctx, count_scheme, &n), ESTC_OK);
    ck_assert_int_ge(n, 2);
}
END_TEST

START_TEST(module_loading_errors)
{
    ck_assert_int_eq(estc_engine_load_module(ctx, "/nonexistent/driver.so"), ESTC_ERR_IO);
    ck_assert_str_ne(estc_ctx_error_detail(ctx), "");
    /* A real shared object without the entry point. */
    ck_assert_int_eq(estc_engine_load_module(ctx, "libm.so.6"), ESTC_ERR_DRIVER);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "estc_driver_entry"));
    ck_assert_int_eq(estc_engine_load_module(ctx, ""), ESTC_ERR_INVALID_ARG);
}
END_TEST

START_TEST(dispatch_checks)
{
    estc_buf b = {0};
    uint8_t d[32] = {0};
    ck_assert_int_eq(estc_key_public(ctx, "mem:k", NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_key_sign(ctx, "mem:k", ESTC_SIG_ECDSA, ESTC_HASH_SHA256, d, 31, &b),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_key_sign(ctx, "mem:k", (estc_sig_alg)9, ESTC_HASH_SHA256, d, 32, &b),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_key_sign(ctx, "mem:k", ESTC_SIG_ECDSA, (estc_hash)9, d, 32, &b),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_cert_store(ctx, "mem:c", d, 0), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_cert_store(ctx, "mem:c", d, sizeof(d)), ESTC_ERR_FORMAT);
    ck_assert_int_eq(estc_key_import(ctx, "mem:k", NULL, 0), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_object_remove(ctx, "mem:k", (estc_obj_kind)0), ESTC_ERR_INVALID_ARG);
    bool found = true;
    ck_assert_int_eq(estc_object_exists(ctx, "mem:k", ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(!found);
    /* Output buffers are replaced only on success. */
    b.data = (uint8_t *)strdup("keep");
    b.len = 4;
    ck_assert_int_eq(estc_key_public(ctx, "mem:none", &b), ESTC_ERR_NOT_FOUND);
    ck_assert_mem_eq(b.data, "keep", 4);
    estc_buf_free(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    estc_buf_free(NULL);
}
END_TEST

START_TEST(generator_errors)
{
    char *addr = NULL;
    ck_assert_int_eq(estc_generator_set(ctx, "nosuch", NULL, NULL), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_int_eq(estc_generator_set(ctx, "", NULL, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", ESTC_OBJ_KEY, NULL, 0, &addr), ESTC_OK);
    ck_assert_ptr_nonnull(strstr(addr, "mem:estc-key-"));
    char *again = NULL;
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", ESTC_OBJ_KEY, NULL, 0, &again), ESTC_OK);
    ck_assert_str_ne(addr, again); /* keys: random names */
    free(addr);
    free(again);
}
END_TEST

static const char *foreign_gen(void *arg, const void *der, size_t len)
{
    (void)arg, (void)der, (void)len;
    return "file:/elsewhere";
}

START_TEST(generator_must_keep_scheme)
{
    char *addr = NULL;
    ck_assert_int_eq(estc_generator_set(ctx, "mem", foreign_gen, NULL), ESTC_OK);
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", ESTC_OBJ_KEY, NULL, 0, &addr),
                     ESTC_ERR_BAD_ADDRESS);
    ck_assert_ptr_null(addr);
}
END_TEST

/* ---- lifecycle record ------------------------------------------------- */

START_TEST(lifecycle_record_format)
{
    estc_lifecycle *lc = NULL;
    ck_assert_int_eq(estc_lifecycle_new(ctx, &lc), ESTC_OK);
    ck_assert(!estc_lifecycle_changed(lc));
    ck_assert_int_eq(estc_lifecycle_key_generate(lc, "mem:a", ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_commit(lc), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_key_generate(lc, "mem:b b", ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert(estc_lifecycle_changed(lc));
    estc_buf rec = {0};
    ck_assert_int_eq(estc_lifecycle_serialize(lc, &rec), ESTC_OK);
    ck_assert(!estc_lifecycle_changed(lc));
    const char *want = "estc-lifecycle 1\ngen 1\nobj key committed 0 mem:a\n"
                       "obj key pending 1 mem:b b\n";
    ck_assert_uint_eq(rec.len, strlen(want));
    ck_assert_mem_eq(rec.data, want, rec.len);

    /* Malformed records are refused and change nothing. */
    const char *bad[] = {
        "",
        "estc-lifecycle 2\ngen 0\n",
        "estc-lifecycle 1\n",
        "estc-lifecycle 1\ngen x\n",
        "estc-lifecycle 1\ngen 0\nobj key committed 0 mem:a",
        "estc-lifecycle 1\ngen 0\nobj nokind committed 0 mem:a\n",
        "estc-lifecycle 1\ngen 0\nobj key nostate 0 mem:a\n",
        "estc-lifecycle 1\ngen 0\nobj key committed 0 \n",
        "estc-lifecycle 1\ngen 0\nobj key committed 0 noscheme\n",
        "estc-lifecycle 1\ngen 0\nobj key committed 0 mem:a\nobj key committed 0 mem:a\n",
        "estc-lifecycle 1\ngen 99999999999\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(estc_lifecycle_deserialize(lc, (const uint8_t *)bad[i], strlen(bad[i])) ==
                          ESTC_ERR_FORMAT,
                      "accepted bad record %zu", i);
        ck_assert_uint_eq(estc_lifecycle_count(lc), 2);
    }
    uint8_t with_nul[] = "estc-lifecycle 1\ngen 0\n\0";
    ck_assert_int_eq(estc_lifecycle_deserialize(lc, with_nul, sizeof(with_nul)), ESTC_ERR_FORMAT);

    estc_lifecycle *back = NULL;
    ck_assert_int_eq(estc_lifecycle_new(ctx, &back), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_deserialize(back, rec.data, rec.len), ESTC_OK);
    ck_assert_uint_eq(estc_lifecycle_count(back), 2);
    const char *addr;
    estc_obj_kind kind;
    estc_obj_state state;
    uint32_t gen;
    ck_assert_int_eq(estc_lifecycle_get(back, 1, &addr, &kind, &state, &gen), ESTC_OK);
    ck_assert_str_eq(addr, "mem:b b");
    ck_assert_int_eq(kind, ESTC_OBJ_KEY);
    ck_assert_int_eq(state, ESTC_OBJ_PENDING);
    ck_assert_int_eq(gen, 1);
    ck_assert_int_eq(estc_lifecycle_get(back, 2, &addr, NULL, NULL, NULL), ESTC_ERR_INVALID_ARG);

    /* State rules. */
    ck_assert_int_eq(estc_lifecycle_supersede(back, "mem:b b"), ESTC_ERR_STATE);
    ck_assert_int_eq(estc_lifecycle_supersede(back, "mem:zz"), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_lifecycle_cert_store(back, "mem:c", ESTC_OBJ_KEY, rec.data, rec.len),
                     ESTC_ERR_INVALID_ARG);

    /* An attempt rolled back completely leaves the record unchanged. */
    ck_assert_int_eq(estc_lifecycle_commit(lc), ESTC_OK);
    ck_assert(estc_lifecycle_changed(lc));
    ck_assert_int_eq(estc_lifecycle_serialize(lc, &rec), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_key_generate(lc, "mem:attempt", ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_supersede(lc, "mem:a"), ESTC_OK);
    ck_assert(estc_lifecycle_changed(lc));
    ck_assert_int_eq(estc_lifecycle_rollback(lc), ESTC_OK);
    ck_assert(!estc_lifecycle_changed(lc));
    ck_assert_int_eq(estc_lifecycle_cleanup(lc), ESTC_OK); /* unchanged: keeps */
    bool found = false;
    ck_assert_int_eq(estc_object_exists(ctx, "mem:a", ESTC_OBJ_KEY, &found), ESTC_OK);
    ck_assert(found);
    estc_lifecycle_free(back);
    /* Changed: cleanup removes everything it recorded. */
    ck_assert_int_eq(estc_lifecycle_key_generate(lc, "mem:c", ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_cleanup(lc), ESTC_OK);
    ck_assert_uint_eq(estc_lifecycle_count(lc), 0);
    const char *all[] = {"mem:a", "mem:b b", "mem:c"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(estc_object_exists(ctx, all[i], ESTC_OBJ_KEY, &found), ESTC_OK);
        ck_assert(!found);
    }
    estc_buf_free(&rec);
    estc_lifecycle_free(lc);
}
END_TEST

/* ---- logging ---------------------------------------------------------- */

struct log_capture {
    int lines;
    estc_log_level worst;
    char last[600];
};

static void capture(void *arg, estc_log_level level, const char *msg)
{
    struct log_capture *c = arg;
    c->lines++;
    if (level < c->worst)
        c->worst = level;
    snprintf(c->last, sizeof(c->last), "%s", msg);
}

START_TEST(logging_levels)
{
    struct log_capture c = {.worst = ESTC_LOG_DEBUG};
    ck_assert_int_eq(estc_ctx_set_log(ctx, ESTC_LOG_ERROR, capture, &c), ESTC_OK);
    estc_log(ctx, ESTC_LOG_INFO, "not shown %d", 1);
    ck_assert_int_eq(c.lines, 0);
    estc_buf b = {0};
    ck_assert_int_eq(estc_key_public(ctx, "mem:missing", &b), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(c.lines, 1);
    ck_assert_int_eq(c.worst, ESTC_LOG_ERROR);
    ck_assert_ptr_nonnull(strstr(c.last, "mem:missing"));
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "mem:missing"));
    estc_ctx_clear_error(ctx);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "");
    ck_assert_int_eq(estc_ctx_set_log(ctx, (estc_log_level)7, capture, &c), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_ctx_set_log(ctx, ESTC_LOG_DEBUG, NULL, NULL), ESTC_OK);
    estc_log(ctx, ESTC_LOG_ERROR, "silent");
    ck_assert_int_eq(c.lines, 1);
    ck_assert_str_eq(estc_ctx_error_detail(NULL), "");

    /* PINs in addresses never reach the detail text or the log. */
    ck_assert_int_eq(estc_ctx_set_log(ctx, ESTC_LOG_DEBUG, capture, &c), ESTC_OK);
    estc_error(ctx, ESTC_ERR_AUTH, "%s: C_Login failed",
               "pkcs11:token=T;pin-value=s3cret;object=k?pin-value=%31%32&module-path=/m.so");
    ck_assert_ptr_null(strstr(estc_ctx_error_detail(ctx), "s3cret"));
    ck_assert_ptr_null(strstr(estc_ctx_error_detail(ctx), "%31%32"));
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "pin-value=***;object=k"));
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "&module-path=/m.so"));
    ck_assert_ptr_null(strstr(c.last, "s3cret"));
    estc_log(ctx, ESTC_LOG_INFO, "key at mem:k;pin-value=1234");
    ck_assert_str_eq(c.last, "key at mem:k;pin-value=***");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine framework");
    TCase *tc = tcase_create("framework");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60); /* generous: valgrind runs these too */
    tcase_add_test(tc, every_error_has_text);
    tcase_add_test(tc, scheme_parsing);
    tcase_add_test(tc, attribute_parsing);
    tcase_add_test(tc, registry_rules);
    tcase_add_test(tc, builtin_schemes_present);
    tcase_add_test(tc, module_loading_errors);
    tcase_add_test(tc, dispatch_checks);
    tcase_add_test(tc, generator_errors);
    tcase_add_test(tc, generator_must_keep_scheme);
    tcase_add_test(tc, lifecycle_record_format);
    tcase_add_test(tc, logging_levels);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
