/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the driver registry: the registration rules of driver API
 * version 2, capabilities (estc_engine_caps(), estc_engine_find_cap()), what
 * a driver receives with and without ESTC_CAP_ATTRIBUTES, estc_key_export(),
 * estc_key_file_path(), estc_address_derive() checks and driver modules.
 */
#include <openssl/x509.h>

#include "unit_util.h"

static bool detail_has(const char *part)
{
    return unit_has(estc_ctx_error_detail(ctx), part);
}

static bool registered(const char *scheme_colon)
{
    const struct estc_driver *d = NULL;
    return estc_engine_find(ctx, scheme_colon, &d) == ESTC_OK;
}

/* ---- registration rules ------------------------------------------------- */

static int init_calls;

static estc_err counting_init(estc_ctx *c, void *s)
{
    (void)c, (void)s;
    init_calls++;
    return ESTC_OK;
}

START_TEST(missing_required_op_named)
{
    static const char *const ops[] = {"key_generate", "key_public",    "key_sign",    "key_remove",
                                      "cert_store",   "cert_load",     "cert_remove", "list",
                                      "exists",       "address_derive"};
    static struct estc_driver d;
    init_calls = 0;
    for (size_t i = 0; i < UNIT_ARRAY_LEN(ops); i++) {
        d = unit_stub_driver("partial", 0);
        d.init = counting_init;
        switch (i) {
        case 0:
            d.key_generate = NULL;
            break;
        case 1:
            d.key_public = NULL;
            break;
        case 2:
            d.key_sign = NULL;
            break;
        case 3:
            d.key_remove = NULL;
            break;
        case 4:
            d.cert_store = NULL;
            break;
        case 5:
            d.cert_load = NULL;
            break;
        case 6:
            d.cert_remove = NULL;
            break;
        case 7:
            d.list = NULL;
            break;
        case 8:
            d.exists = NULL;
            break;
        case 9:
            d.address_derive = NULL;
            break;
        }
        estc_ctx_clear_error(ctx);
        ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
        char want[128];
        snprintf(want, sizeof(want), "driver \"partial\" lacks the required operation %s", ops[i]);
        ck_assert_str_eq(estc_ctx_error_detail(ctx), want);
        ck_assert(!registered("partial:"));
    }
    ck_assert_int_eq(init_calls, 0); /* refused before init */

    /* The optional operations may all be missing. */
    d = unit_stub_driver("partial", 0);
    d.init = NULL;
    d.cleanup = NULL;
    d.key_import = NULL;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    ck_assert(registered("partial:"));
}
END_TEST

START_TEST(bad_schemes_refused)
{
    static struct estc_driver d;
    char s31[40], s32[40];
    memset(s31, 's', 31);
    s31[31] = '\0';
    memset(s32, 's', 32);
    s32[32] = '\0';
    const char *bad[] = {"",       "Upper", "uPPer", "1abc", "-abc", "with:colon",
                         "sp ace", "a/b",   "tab\t", s32,    NULL};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        d = unit_stub_driver(bad[i], 0);
        estc_ctx_clear_error(ctx);
        ck_assert_msg(estc_engine_register(ctx, &d) == ESTC_ERR_DRIVER, "scheme %zu accepted", i);
        ck_assert(detail_has("is not a lower-case scheme"));
    }
    static struct estc_driver ok1, ok2;
    ok1 = unit_stub_driver(s31, 0); /* the longest */
    ck_assert_int_eq(estc_engine_register(ctx, &ok1), ESTC_OK);
    ok2 = unit_stub_driver("a+b.c-9", 0);
    ck_assert_int_eq(estc_engine_register(ctx, &ok2), ESTC_OK);
    const struct estc_driver *found = NULL;
    ck_assert_int_eq(estc_engine_find(ctx, "A+B.C-9:x", &found), ESTC_OK);
    ck_assert_ptr_eq(found, &ok2);
}
END_TEST

START_TEST(duplicate_scheme_exists)
{
    static struct estc_driver first, second;
    first = unit_stub_driver("dup", 0);
    second = unit_stub_driver("dup", ESTC_CAP_ATTRIBUTES);
    second.init = counting_init;
    init_calls = 0;
    ck_assert_int_eq(estc_engine_register(ctx, &first), ESTC_OK);
    ck_assert_int_eq(estc_engine_register(ctx, &second), ESTC_ERR_EXISTS);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "scheme \"dup\" is registered already");
    ck_assert_int_eq(init_calls, 0);
    const struct estc_driver *found = NULL;
    ck_assert_int_eq(estc_engine_find(ctx, "dup:", &found), ESTC_OK);
    ck_assert_ptr_eq(found, &first);
    ck_assert_uint_eq(estc_engine_caps(ctx, "dup:"), 0);

    static struct estc_driver mem, file;
    mem = unit_stub_driver("mem", 0);
    file = unit_stub_driver("file", 0);
    ck_assert_int_eq(estc_engine_register(ctx, &mem), ESTC_ERR_EXISTS);
    ck_assert_int_eq(estc_engine_register(ctx, &file), ESTC_ERR_EXISTS);
    ck_assert_uint_eq(estc_engine_caps(ctx, "mem:"), ESTC_CAP_VOLATILE | ESTC_CAP_KEY_EXPORT);
}
END_TEST

START_TEST(unknown_caps_refused)
{
    static struct estc_driver d;
    const unsigned bad[] = {1u << 4, 1u << 31, ESTC_CAP_ATTRIBUTES | 1u << 7};
    const char *shown[] = {"(0x10)", "(0x80000000)", "(0x80)"};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        d = unit_stub_driver("capx", 0);
        d.caps = bad[i];
        ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
        ck_assert(detail_has("declares capabilities this library does not know"));
        ck_assert(detail_has(shown[i]));
        ck_assert(!registered("capx:"));
    }
    d = unit_stub_driver("capx", ESTC_CAP_ALL);
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    ck_assert_uint_eq(estc_engine_caps(ctx, "capx:"), ESTC_CAP_ALL);
}
END_TEST

START_TEST(cap_and_op_go_together)
{
    static struct estc_driver d;
    /* The capability without the operation. */
    d = unit_stub_driver("pair", ESTC_CAP_KEY_EXPORT);
    d.key_export = NULL;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
    ck_assert_str_eq(estc_ctx_error_detail(ctx),
                     "driver \"pair\": key_export and ESTC_CAP_KEY_EXPORT go together");
    d = unit_stub_driver("pair", ESTC_CAP_FILES);
    d.key_file_path = NULL;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
    ck_assert_str_eq(estc_ctx_error_detail(ctx),
                     "driver \"pair\": key_file_path and ESTC_CAP_FILES go together");
    /* The operation without the capability. */
    d = unit_stub_driver("pair", 0);
    d.key_export = unit_stub_export;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
    ck_assert(detail_has("key_export and ESTC_CAP_KEY_EXPORT go together"));
    d = unit_stub_driver("pair", ESTC_CAP_VOLATILE);
    d.key_file_path = unit_stub_file_path;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
    ck_assert(detail_has("key_file_path and ESTC_CAP_FILES go together"));
    /* One pair right and the other wrong is still wrong. */
    d = unit_stub_driver("pair", ESTC_CAP_KEY_EXPORT | ESTC_CAP_FILES);
    d.key_file_path = NULL;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
    ck_assert(!registered("pair:"));
    /* Both pairs complete. */
    d = unit_stub_driver("pair", ESTC_CAP_KEY_EXPORT | ESTC_CAP_FILES);
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    ck_assert_uint_eq(estc_engine_caps(ctx, "pair:"), ESTC_CAP_KEY_EXPORT | ESTC_CAP_FILES);
}
END_TEST

START_TEST(other_api_versions_refused)
{
    static struct estc_driver d;
    struct unit_log log = {0};
    ck_assert_int_eq(estc_ctx_set_log(ctx, ESTC_LOG_ERROR, unit_log_fn, &log), ESTC_OK);
    d = unit_stub_driver("old", 0);
    d.api_version = 1;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
    const char *detail = estc_ctx_error_detail(ctx);
    ck_assert_msg(unit_has(detail, "driver API version 1, this library speaks 2"), "%s", detail);
    ck_assert_msg(unit_has(detail, "rebuild the driver against this estc/engine.h"), "%s", detail);
    ck_assert(unit_has(detail, "parsed addresses"));
    ck_assert(unit_has(detail, "docs/writing-a-driver.md"));
    ck_assert_int_eq(log.lines, 1);
    ck_assert(unit_has(log.text[0], "driver API version 1"));
    ck_assert(!registered("old:"));

    const unsigned others[] = {0, 3, 99};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(others); i++) {
        d = unit_stub_driver("old", 0);
        d.api_version = others[i];
        ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
        char want[80];
        snprintf(want, sizeof(want), "driver API version %u, this library speaks 2", others[i]);
        ck_assert_str_eq(estc_ctx_error_detail(ctx), want);
        ck_assert(!registered("old:"));
    }
    /* The version is checked first: a version-1 driver with a bad scheme is
     * still told about the version. */
    d = unit_stub_driver("Old", 0);
    d.api_version = 1;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_ERR_DRIVER);
    ck_assert(detail_has("driver API version 1"));
}
END_TEST

/* ---- init, state and cleanup ------------------------------------------- */

struct counted_state {
    unsigned char bytes[64];
};

static void *init_state, *public_state;
static int cleanup_order[8], n_cleanups;

static estc_err failing_init(estc_ctx *c, void *s)
{
    (void)c, (void)s;
    return ESTC_ERR_ENGINE;
}

static estc_err checking_init(estc_ctx *c, void *s)
{
    (void)c;
    struct counted_state *st = s;
    ck_assert_ptr_nonnull(st);
    for (size_t i = 0; i < sizeof(st->bytes); i++)
        ck_assert_int_eq(st->bytes[i], 0);
    st->bytes[0] = 42;
    init_state = s;
    return ESTC_OK;
}

static estc_err state_public(estc_ctx *c, void *s, const estc_address *a, estc_buf *b)
{
    (void)c, (void)a, (void)b;
    public_state = s;
    ck_assert_int_eq(((struct counted_state *)s)->bytes[0], 42);
    return ESTC_ERR_NOT_FOUND;
}

static void ordered_cleanup(estc_ctx *c, void *s)
{
    (void)c;
    /* Each driver keeps its number in its state. */
    if (n_cleanups < 8)
        cleanup_order[n_cleanups] = s != NULL ? ((struct counted_state *)s)->bytes[1] : -1;
    n_cleanups++;
}

static estc_err numbered_init(estc_ctx *c, void *s)
{
    (void)c;
    static unsigned char next = 1;
    ((struct counted_state *)s)->bytes[1] = next++;
    return ESTC_OK;
}

START_TEST(init_failure_registers_nothing)
{
    static struct estc_driver bad, good;
    bad = unit_stub_driver("initx", 0);
    bad.state_size = sizeof(struct counted_state);
    bad.init = failing_init;
    bad.cleanup = ordered_cleanup;
    n_cleanups = 0;
    ck_assert_int_eq(estc_engine_register(ctx, &bad), ESTC_ERR_ENGINE);
    ck_assert(!registered("initx:"));
    ck_assert_int_eq(n_cleanups, 0); /* no cleanup for a driver never initialised */
    good = unit_stub_driver("initx", 0);
    ck_assert_int_eq(estc_engine_register(ctx, &good), ESTC_OK);
    ck_assert(registered("initx:"));
}
END_TEST

START_TEST(state_zeroed_and_passed)
{
    static struct estc_driver d;
    d = unit_stub_driver("stated", 0);
    d.state_size = sizeof(struct counted_state);
    d.init = checking_init;
    d.key_public = state_public;
    init_state = public_state = NULL;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    ck_assert_ptr_nonnull(init_state);
    estc_buf b = {0};
    ck_assert_int_eq(estc_key_public(ctx, "stated:k", &b), ESTC_ERR_NOT_FOUND);
    ck_assert_ptr_eq(public_state, init_state);
}
END_TEST

START_TEST(cleanup_in_reverse_order)
{
    static struct estc_driver d[3];
    const char *names[] = {"first", "second", "third"};
    n_cleanups = 0;
    for (int i = 0; i < 3; i++) {
        d[i] = unit_stub_driver(names[i], 0);
        d[i].state_size = sizeof(struct counted_state);
        d[i].init = numbered_init;
        d[i].cleanup = ordered_cleanup;
        ck_assert_int_eq(estc_engine_register(ctx, &d[i]), ESTC_OK);
    }
    estc_ctx_free(ctx);
    ctx = NULL;
    ck_assert_int_eq(n_cleanups, 3);
    ck_assert_int_eq(cleanup_order[0], 3);
    ck_assert_int_eq(cleanup_order[1], 2);
    ck_assert_int_eq(cleanup_order[2], 1);
}
END_TEST

/* ---- capabilities -------------------------------------------------------- */

START_TEST(builtin_caps)
{
    ck_assert_uint_eq(estc_engine_caps(ctx, "mem:"), ESTC_CAP_VOLATILE | ESTC_CAP_KEY_EXPORT);
    ck_assert_uint_eq(estc_engine_caps(ctx, "MEM:some-key"),
                      ESTC_CAP_VOLATILE | ESTC_CAP_KEY_EXPORT);
    ck_assert_uint_eq(estc_engine_caps(ctx, "file:"), ESTC_CAP_FILES);
    ck_assert_uint_eq(estc_engine_caps(ctx, "file:/var/lib/estc/key.pem"), ESTC_CAP_FILES);
    ck_assert_uint_eq(estc_engine_caps(ctx, "nosuch:"), 0);
    ck_assert_uint_eq(estc_engine_caps(ctx, "mem"), 0); /* no ':' */
    ck_assert_uint_eq(estc_engine_caps(ctx, "1mem:"), 0);
    ck_assert_uint_eq(estc_engine_caps(ctx, ""), 0);
    ck_assert_uint_eq(estc_engine_caps(ctx, NULL), 0);
    ck_assert_uint_eq(estc_engine_caps(NULL, "mem:"), 0);
}
END_TEST

static void collect_scheme(void *arg, const struct estc_driver *drv)
{
    char *list = arg;
    strcat(list, drv->scheme);
    strcat(list, " ");
}

START_TEST(find_cap_in_registration_order)
{
    const struct estc_driver *found = NULL;
    const struct estc_driver *mem = NULL, *file = NULL;
    ck_assert_int_eq(estc_engine_find(ctx, "mem:", &mem), ESTC_OK);
    ck_assert_int_eq(estc_engine_find(ctx, "file:", &file), ESTC_OK);

    static struct estc_driver a, v1, v2, all;
    a = unit_stub_driver("ta", ESTC_CAP_ATTRIBUTES);
    v1 = unit_stub_driver("tv1", ESTC_CAP_ATTRIBUTES | ESTC_CAP_VOLATILE);
    v2 = unit_stub_driver("tv2", ESTC_CAP_ATTRIBUTES | ESTC_CAP_VOLATILE);
    ck_assert_int_eq(estc_engine_register(ctx, &a), ESTC_OK);
    ck_assert_int_eq(estc_engine_register(ctx, &v1), ESTC_OK);
    ck_assert_int_eq(estc_engine_register(ctx, &v2), ESTC_OK);

    /* The built-ins come first. */
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_VOLATILE, &found), ESTC_OK);
    ck_assert_ptr_eq(found, mem);
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_KEY_EXPORT, &found), ESTC_OK);
    ck_assert_ptr_eq(found, mem);
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_VOLATILE | ESTC_CAP_KEY_EXPORT, &found),
                     ESTC_OK);
    ck_assert_ptr_eq(found, mem);
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_FILES, &found), ESTC_OK);
    ck_assert_ptr_eq(found, file);
    /* Every asked flag must be there: the first with both. */
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_ATTRIBUTES | ESTC_CAP_VOLATILE, &found),
                     ESTC_OK);
    ck_assert_ptr_eq(found, &v1);

    /* None with all the flags. */
    found = &a;
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_ALL, &found), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_ptr_eq(found, &a);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "no engine has the capabilities 0xf");
    all = unit_stub_driver("tall", ESTC_CAP_ALL);
    ck_assert_int_eq(estc_engine_register(ctx, &all), ESTC_OK);
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_ALL, &found), ESTC_OK);
    ck_assert_ptr_eq(found, &all);

    ck_assert_int_eq(estc_engine_find_cap(ctx, 0, &found), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_engine_find_cap(ctx, ESTC_CAP_FILES, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_engine_find_cap(NULL, ESTC_CAP_FILES, &found), ESTC_ERR_INVALID_ARG);

    /* estc_engine_schemes() walks the same order. */
    char list[256] = "";
    ck_assert_int_eq(estc_engine_schemes(ctx, collect_scheme, list), ESTC_OK);
    ck_assert_int_eq(strncmp(list, "mem file ", 9), 0);
    ck_assert_ptr_nonnull(strstr(list, " ta tv1 tv2 tall "));
    ck_assert_int_eq(estc_engine_schemes(ctx, NULL, list), ESTC_ERR_INVALID_ARG);
}
END_TEST

/* ---- what drivers receive ------------------------------------------------ */

static struct {
    int calls;
    char text[256], redacted[256], scheme[40], body[256];
    size_t n_path, n_query;
    char names[8][72];
    char values[8][64];
    size_t lens[8];
} seen;

static estc_err recording_public(estc_ctx *c, void *s, const estc_address *a, estc_buf *b)
{
    (void)c, (void)s;
    seen.calls++;
    snprintf(seen.text, sizeof(seen.text), "%s", a->text);
    snprintf(seen.redacted, sizeof(seen.redacted), "%s", a->redacted);
    snprintf(seen.scheme, sizeof(seen.scheme), "%s", a->scheme);
    snprintf(seen.body, sizeof(seen.body), "%s", a->body);
    seen.n_path = a->n_path;
    seen.n_query = a->n_query;
    for (size_t i = 0; i < a->n_path + a->n_query && i < 8; i++) {
        const estc_attr *at = i < a->n_path ? &a->path[i] : &a->query[i - a->n_path];
        snprintf(seen.names[i], sizeof(seen.names[i]), "%s", at->name);
        memcpy(seen.values[i], at->value, at->value_len < 63 ? at->value_len : 63);
        seen.lens[i] = at->value_len;
    }
    return estc_buf_set(b, "spki", 4);
}

START_TEST(attributes_driver_gets_parsed_address)
{
    static struct estc_driver d;
    d = unit_stub_driver("tattr", ESTC_CAP_ATTRIBUTES);
    d.key_public = recording_public;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    memset(&seen, 0, sizeof(seen));
    estc_buf b = {0};
    const char *addr = "TATTR:token=My%20T;id=%00%01;object=k?module-path=/m.so&pin-value=12";
    ck_assert_int_eq(estc_key_public(ctx, addr, &b), ESTC_OK);
    ck_assert_uint_eq(b.len, 4);
    estc_buf_free(&b);
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_str_eq(seen.text, addr);
    ck_assert_str_eq(seen.scheme, "tattr");
    ck_assert_str_eq(seen.body, "token=My%20T;id=%00%01;object=k?module-path=/m.so&pin-value=12");
    ck_assert_str_eq(seen.redacted,
                     "TATTR:token=My%20T;id=%00%01;object=k?module-path=/m.so&pin-value=***");
    ck_assert_uint_eq(seen.n_path, 3);
    ck_assert_uint_eq(seen.n_query, 2);
    ck_assert_str_eq(seen.names[0], "token");
    ck_assert_str_eq(seen.values[0], "My T");
    ck_assert_str_eq(seen.names[1], "id");
    ck_assert_uint_eq(seen.lens[1], 2);
    ck_assert_mem_eq(seen.values[1], "\x00\x01", 2);
    ck_assert_str_eq(seen.names[2], "object");
    ck_assert_str_eq(seen.names[3], "module-path");
    ck_assert_str_eq(seen.values[3], "/m.so");
    ck_assert_str_eq(seen.names[4], "pin-value");
    ck_assert_str_eq(seen.values[4], "12");

    /* A malformed attribute list never reaches the driver. */
    const char *bad[] = {"tattr:a=1;a=2", "tattr:a", "tattr:a=%zz", "tattr:=1", "tattr:a=1?a=1"};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        ck_assert_int_eq(estc_key_public(ctx, bad[i], &b), ESTC_ERR_BAD_ADDRESS);
        char want[256];
        snprintf(want, sizeof(want),
                 "bad address \"%s\": attributes must be name=value, each given once, with "
                 "valid percent-encoding",
                 bad[i]);
        ck_assert_str_eq(estc_ctx_error_detail(ctx), want);
    }
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_ptr_null(b.data);
}
END_TEST

/* Context-wide defaults reach the driver as query attributes when the
 * address lacks them; the address itself is shown as given. */
/* ---- the parsed address kept between operations ------------------------ */

/* A driver that records what each key_public call got: the parsed address
 * object, and its "x" attribute. Its list runs key_public on @nested_addr
 * from inside (an operation from a driver's callback). */
static const estc_address *rec_seen;
static char rec_x[32];
static const char *rec_nested;

static estc_err rec_public(estc_ctx *c, void *s, const estc_address *a, estc_buf *spki)
{
    (void)c, (void)s;
    rec_seen = a;
    const estc_attr *x = estc_address_get(a, "x");
    snprintf(rec_x, sizeof(rec_x), "%s", x != NULL ? x->value : "-");
    return estc_buf_set(spki, a->text, strlen(a->text));
}

static estc_err rec_list(estc_ctx *c, void *s, const estc_address *p, estc_obj_kind k,
                         estc_list_fn f, void *arg)
{
    (void)s, (void)k, (void)f, (void)arg;
    estc_buf b = {0};
    estc_err err = estc_key_public(c, rec_nested, &b);
    /* The outer address must still be whole after the inner operation. */
    if (err == ESTC_OK && strcmp(p->text, "rec:object=k?x=1") != 0 && strcmp(p->text, "rec:object=k") != 0)
        err = ESTC_ERR_STATE;
    estc_buf_free(&b);
    return err;
}

static bool rec_ignore(void *arg, const char *addr, estc_obj_kind kind)
{
    (void)arg, (void)addr, (void)kind;
    return true;
}

START_TEST(parsed_address_kept)
{
    static struct estc_driver d;
    d = unit_stub_driver("rec", ESTC_CAP_ATTRIBUTES);
    d.key_public = rec_public;
    d.list = rec_list;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    estc_buf b = {0};
    /* The same address twice: one parse serves both. */
    ck_assert_int_eq(estc_key_public(ctx, "rec:object=k", &b), ESTC_OK);
    const estc_address *first = rec_seen;
    estc_buf_free(&b);
    ck_assert_int_eq(estc_key_public(ctx, "rec:object=k", &b), ESTC_OK);
    ck_assert_ptr_eq(rec_seen, first);
    ck_assert_str_eq(rec_x, "-");
    estc_buf_free(&b);
    /* A default set since is seen by the next operation on the address. */
    ck_assert_int_eq(estc_engine_set_default(ctx, "rec", "x", "1"), ESTC_OK);
    ck_assert_int_eq(estc_key_public(ctx, "rec:object=k", &b), ESTC_OK);
    ck_assert_str_eq(rec_x, "1");
    estc_buf_free(&b);
    /* Another address is parsed for itself. */
    ck_assert_int_eq(estc_key_public(ctx, "rec:object=k?x=2", &b), ESTC_OK);
    ck_assert_str_eq(rec_x, "2");
    ck_assert_mem_eq(b.data, "rec:object=k?x=2", b.len);
    estc_buf_free(&b);
    /* Operations inside an operation, on its address and on another, leave
     * the outer one's address whole (ASan checks the memory). */
    const char *nested[] = {"rec:object=k", "rec:object=other", "rec:object=k"};
    for (size_t i = 0; i < 3; i++) {
        rec_nested = nested[i];
        ck_assert_int_eq(estc_object_list(ctx, "rec:object=k", ESTC_OBJ_KEY, rec_ignore, NULL), ESTC_OK);
        ck_assert_int_eq(estc_key_public(ctx, "rec:object=k", &b), ESTC_OK);
        ck_assert_mem_eq(b.data, "rec:object=k", b.len);
        estc_buf_free(&b);
    }
}
END_TEST

START_TEST(defaults_fill_missing_attributes)
{
    static struct estc_driver d;
    d = unit_stub_driver("tdef", ESTC_CAP_ATTRIBUTES);
    d.key_public = recording_public;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    ck_assert_int_eq(estc_engine_set_default(ctx, "tdef", "module-path", "/usr/lib/a b.so"),
                     ESTC_OK);
    ck_assert_int_eq(estc_engine_set_default(ctx, "tdef", "tcti", "swtpm:port=2321"), ESTC_OK);
    estc_buf b = {0};

    /* Missing in the address: added, decoded like any attribute. */
    memset(&seen, 0, sizeof(seen));
    ck_assert_int_eq(estc_key_public(ctx, "tdef:object=k", &b), ESTC_OK);
    ck_assert_str_eq(seen.text, "tdef:object=k");
    ck_assert_str_eq(seen.body, "object=k");
    ck_assert_uint_eq(seen.n_path, 1);
    ck_assert_uint_eq(seen.n_query, 2);
    ck_assert_str_eq(seen.names[1], "module-path");
    ck_assert_str_eq(seen.values[1], "/usr/lib/a b.so");
    ck_assert_str_eq(seen.names[2], "tcti");
    ck_assert_str_eq(seen.values[2], "swtpm:port=2321");

    /* Given in the address (path or query): the address wins. */
    memset(&seen, 0, sizeof(seen));
    ck_assert_int_eq(estc_key_public(ctx, "tdef:object=k?tcti=mine&x=1", &b), ESTC_OK);
    ck_assert_str_eq(seen.text, "tdef:object=k?tcti=mine&x=1");
    ck_assert_uint_eq(seen.n_query, 3);
    ck_assert_str_eq(seen.values[1], "mine");
    ck_assert_str_eq(seen.names[3], "module-path");

    /* Replaced, then removed. */
    ck_assert_int_eq(estc_engine_set_default(ctx, "tdef", "tcti", "other"), ESTC_OK);
    ck_assert_int_eq(estc_engine_set_default(ctx, "tdef", "module-path", NULL), ESTC_OK);
    memset(&seen, 0, sizeof(seen));
    ck_assert_int_eq(estc_key_public(ctx, "tdef:object=k", &b), ESTC_OK);
    ck_assert_uint_eq(seen.n_query, 1);
    ck_assert_str_eq(seen.names[1], "tcti");
    ck_assert_str_eq(seen.values[1], "other");
    estc_buf_free(&b);

    /* Refusals: an opaque engine, an unknown scheme, a bad name. */
    ck_assert_int_eq(estc_engine_set_default(ctx, "mem", "x", "1"), ESTC_ERR_UNSUPPORTED);
    ck_assert_int_eq(estc_engine_set_default(ctx, "nosuch", "x", "1"), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_int_eq(estc_engine_set_default(ctx, "tdef", "a=b", "1"), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_engine_set_default(ctx, "tdef", "", "1"), ESTC_ERR_INVALID_ARG);
}
END_TEST

static char seen_query[256];
static estc_err recording_query(estc_ctx *c, void *s, const estc_address *a, estc_buf *b)
{
    (void)c, (void)s;
    snprintf(seen_query, sizeof(seen_query), "%s", a->query_text);
    return estc_buf_set(b, "spki", 4);
}

/* The query as spelled, for drivers that carry it into derived addresses. */
START_TEST(query_text_verbatim)
{
    static struct estc_driver d;
    d = unit_stub_driver("tqry", ESTC_CAP_ATTRIBUTES);
    d.key_public = recording_query;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    estc_buf b = {0};
    ck_assert_int_eq(estc_key_public(ctx, "tqry:h=1?tcti=swtpm:host%3D1&x=%41", &b), ESTC_OK);
    ck_assert_str_eq(seen_query, "tcti=swtpm:host%3D1&x=%41");
    ck_assert_int_eq(estc_key_public(ctx, "tqry:h=1", &b), ESTC_OK);
    ck_assert_str_eq(seen_query, "");
    /* A default is the context's, not part of the address's query. */
    ck_assert_int_eq(estc_engine_set_default(ctx, "tqry", "tcti", "dev"), ESTC_OK);
    ck_assert_int_eq(estc_key_public(ctx, "tqry:h=1", &b), ESTC_OK);
    ck_assert_str_eq(seen_query, "");
    ck_assert_int_eq(estc_key_public(ctx, "tqry:h=1?x=2", &b), ESTC_OK);
    ck_assert_str_eq(seen_query, "x=2");
    estc_buf_free(&b);
}
END_TEST

START_TEST(opaque_driver_gets_body_only)
{
    static struct estc_driver d;
    d = unit_stub_driver("topq", ESTC_CAP_VOLATILE);
    d.key_public = recording_public;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    memset(&seen, 0, sizeof(seen));
    estc_buf b = {0};
    /* Not a valid attribute list, and no need to be. */
    const char *addr = "topq:token=My%20T;a=1;a=2?%zz&x";
    ck_assert_int_eq(estc_key_public(ctx, addr, &b), ESTC_OK);
    estc_buf_free(&b);
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_str_eq(seen.text, addr);
    ck_assert_str_eq(seen.scheme, "topq");
    ck_assert_str_eq(seen.body, "token=My%20T;a=1;a=2?%zz&x");
    ck_assert_uint_eq(seen.n_path, 0);
    ck_assert_uint_eq(seen.n_query, 0);
}
END_TEST

START_TEST(unknown_scheme_and_bad_address)
{
    estc_buf b = {0};
    ck_assert_int_eq(estc_key_public(ctx, "nosuch:x", &b), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "no engine for scheme \"nosuch:\"");
    ck_assert_int_eq(estc_key_public(ctx, "NoSuch:x", &b), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "no engine for scheme \"nosuch:\"");
    ck_assert_int_eq(estc_key_public(ctx, "no scheme", &b), ESTC_ERR_BAD_ADDRESS);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "bad address \"no scheme\": no valid scheme");
    ck_assert_int_eq(estc_key_public(ctx, NULL, &b), ESTC_ERR_INVALID_ARG);
    const struct estc_driver *d = NULL;
    ck_assert_int_eq(estc_engine_find(ctx, "mem:", NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_engine_find(ctx, "nosuch:", &d), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_ptr_null(d);
    ck_assert_int_eq(estc_engine_find(NULL, "mem:", &d), ESTC_ERR_INVALID_ARG);
}
END_TEST

/* ---- key_export and key_file_path ---------------------------------------- */

START_TEST(key_export_by_capability)
{
    estc_buf keep = {0};
    ck_assert_int_eq(estc_buf_set(&keep, "keep", 4), ESTC_OK);
    /* file: does not declare it. */
    ck_assert_int_eq(estc_key_export(ctx, "file:/nonexistent/k.pem", &keep), ESTC_ERR_UNSUPPORTED);
    ck_assert_str_eq(estc_ctx_error_detail(ctx),
                     "file:/nonexistent/k.pem: the engine keeps its keys to itself");
    ck_assert_uint_eq(keep.len, 4);
    ck_assert_mem_eq(keep.data, "keep", 4);
    /* mem: does; a missing key is NOT_FOUND and the buffer stays. */
    ck_assert_int_eq(estc_key_export(ctx, "mem:none", &keep), ESTC_ERR_NOT_FOUND);
    ck_assert_mem_eq(keep.data, "keep", 4);
    ck_assert_int_eq(estc_key_export(ctx, "mem:none", NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_key_export(ctx, "nosuch:x", &keep), ESTC_ERR_UNKNOWN_SCHEME);

    /* A custom driver with the capability is asked. */
    static struct estc_driver d;
    d = unit_stub_driver("texp", ESTC_CAP_KEY_EXPORT);
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    ck_assert_int_eq(estc_key_export(ctx, "texp:k", &keep), ESTC_OK);
    ck_assert_uint_eq(keep.len, 10);
    ck_assert_mem_eq(keep.data, "stub-pkcs8", 10);
    estc_buf_free(&keep);
}
END_TEST

START_TEST(key_export_mem_round_trip)
{
    const estc_key_type types[] = {ESTC_KEY_EC_P256, ESTC_KEY_EC_P384};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(types); i++) {
        char orig[32], copy[32];
        snprintf(orig, sizeof(orig), "mem:orig-%zu", i);
        snprintf(copy, sizeof(copy), "mem:copy-%zu", i);
        ck_assert_int_eq(estc_key_generate(ctx, orig, types[i]), ESTC_OK);
        estc_buf pkcs8 = {0}, pub1 = {0}, pub2 = {0}, sig = {0};
        ck_assert_int_eq(estc_key_export(ctx, orig, &pkcs8), ESTC_OK);
        /* One whole PKCS#8 PrivateKeyInfo. */
        const unsigned char *p = pkcs8.data;
        PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)pkcs8.len);
        ck_assert_ptr_nonnull(p8);
        ck_assert_ptr_eq(p, pkcs8.data + pkcs8.len);
        PKCS8_PRIV_KEY_INFO_free(p8);
        /* It imports as the same key. */
        ck_assert_int_eq(estc_key_import(ctx, copy, pkcs8.data, pkcs8.len), ESTC_OK);
        ck_assert_int_eq(estc_key_public(ctx, orig, &pub1), ESTC_OK);
        ck_assert_int_eq(estc_key_public(ctx, copy, &pub2), ESTC_OK);
        ck_assert_uint_eq(pub1.len, pub2.len);
        ck_assert_mem_eq(pub1.data, pub2.data, pub1.len);
        /* The copy signs what the original's public key verifies. */
        uint8_t digest[48];
        memset(digest, 0x5a, sizeof(digest));
        estc_hash h = types[i] == ESTC_KEY_EC_P256 ? ESTC_HASH_SHA256 : ESTC_HASH_SHA384;
        size_t dlen = types[i] == ESTC_KEY_EC_P256 ? 32 : 48;
        ck_assert_int_eq(estc_key_sign(ctx, copy, ESTC_SIG_ECDSA, h, digest, dlen, &sig), ESTC_OK);
        p = pub1.data;
        EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)pub1.len);
        ck_assert_ptr_nonnull(pk);
        EVP_PKEY_CTX *vctx = EVP_PKEY_CTX_new(pk, NULL);
        ck_assert_ptr_nonnull(vctx);
        ck_assert_int_eq(EVP_PKEY_verify_init(vctx), 1);
        ck_assert_int_eq(EVP_PKEY_verify(vctx, sig.data, sig.len, digest, dlen), 1);
        EVP_PKEY_CTX_free(vctx);
        EVP_PKEY_free(pk);
        estc_buf_free(&pkcs8);
        estc_buf_free(&pub1);
        estc_buf_free(&pub2);
        estc_buf_free(&sig);
    }
}
END_TEST

START_TEST(key_file_path_by_capability)
{
    char *path = NULL;
    ck_assert_int_eq(estc_key_file_path(ctx, "file:/var/lib/estc/key.pem", &path), ESTC_OK);
    ck_assert_str_eq(path, "/var/lib/estc/key.pem");
    free(path);
    path = NULL;
    ck_assert_int_eq(estc_key_file_path(ctx, "FILE:relative/key.pem", &path), ESTC_OK);
    ck_assert_str_eq(path, "relative/key.pem");
    free(path);

    char *keep = (char *)"keep";
    path = keep;
    ck_assert_int_eq(estc_key_file_path(ctx, "file://host/key.pem", &path), ESTC_ERR_BAD_ADDRESS);
    ck_assert_ptr_eq(path, keep);
    ck_assert_int_eq(estc_key_file_path(ctx, "file:/var/lib/estc/", &path), ESTC_ERR_BAD_ADDRESS);
    ck_assert_int_eq(estc_key_file_path(ctx, "mem:k", &path), ESTC_ERR_UNSUPPORTED);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "mem:k: the engine's keys are not files");
    ck_assert_ptr_eq(path, keep);
    ck_assert_int_eq(estc_key_file_path(ctx, "mem:k", NULL), ESTC_ERR_INVALID_ARG);

    static struct estc_driver d;
    d = unit_stub_driver("tfiles", ESTC_CAP_FILES);
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    ck_assert_int_eq(estc_key_file_path(ctx, "tfiles:/x/y.pem", &path), ESTC_OK);
    ck_assert_str_eq(path, "/x/y.pem");
    free(path);
}
END_TEST

/* ---- estc_address_derive checks ------------------------------------------ */

static int derive_mode;

static estc_err odd_derive(estc_ctx *c, void *s, const estc_address *p, estc_obj_kind k,
                           const char *n, char **out)
{
    (void)c, (void)s, (void)p, (void)k, (void)n;
    if (derive_mode == 0) { /* over-long */
        *out = malloc(ESTC_ADDRESS_MAX + 2);
        ck_assert_ptr_nonnull(*out);
        memcpy(*out, "todd:", 5);
        memset(*out + 5, 'x', ESTC_ADDRESS_MAX - 4);
        (*out)[ESTC_ADDRESS_MAX + 1] = '\0';
        return ESTC_OK;
    }
    if (derive_mode == 1) { /* success without an answer */
        *out = NULL;
        return ESTC_OK;
    }
    return ESTC_ERR_ENGINE;
}

START_TEST(address_derive_checks)
{
    char *addr = NULL;
    ck_assert_int_eq(estc_address_derive(ctx, "mem:dev-", ESTC_OBJ_TRUST, "ca_1-X", &addr),
                     ESTC_OK);
    ck_assert_str_eq(addr, "mem:dev-ca_1-X");
    free(addr);
    ck_assert_int_eq(estc_address_derive(ctx, "file:/d/", ESTC_OBJ_CERT, "c", &addr), ESTC_OK);
    ck_assert_str_eq(addr, "file:/d/c.crt.pem");
    free(addr);

    char n64[80], n65[80];
    memset(n64, 'n', 64);
    n64[64] = '\0';
    memset(n65, 'n', 65);
    n65[65] = '\0';
    ck_assert_int_eq(estc_address_derive(ctx, "mem:", ESTC_OBJ_KEY, n64, &addr), ESTC_OK);
    ck_assert_uint_eq(strlen(addr), 4 + 64);
    free(addr);
    addr = NULL;
    const char *bad[] = {"", "a/b", "a b", "a.b", "a:b", n65, NULL};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        ck_assert_int_eq(estc_address_derive(ctx, "mem:", ESTC_OBJ_KEY, bad[i], &addr),
                         ESTC_ERR_INVALID_ARG);
        ck_assert_ptr_null(addr);
    }
    ck_assert_int_eq(estc_address_derive(ctx, "mem:", (estc_obj_kind)0, "n", &addr),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_derive(ctx, "mem:", (estc_obj_kind)4, "n", &addr),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_derive(ctx, "mem:", ESTC_OBJ_KEY, "n", NULL),
                     ESTC_ERR_INVALID_ARG);

    /* What a driver answers is checked. */
    static struct estc_driver d;
    d = unit_stub_driver("todd", 0);
    d.address_derive = odd_derive;
    ck_assert_int_eq(estc_engine_register(ctx, &d), ESTC_OK);
    for (derive_mode = 0; derive_mode < 3; derive_mode++) {
        ck_assert_int_eq(estc_address_derive(ctx, "todd:", ESTC_OBJ_KEY, "n", &addr),
                         derive_mode == 2 ? ESTC_ERR_ENGINE : ESTC_ERR_BAD_ADDRESS);
        ck_assert_ptr_null(addr);
    }
}
END_TEST

/* ---- driver modules ------------------------------------------------------ */

static const char *module_path(const char *var)
{
    const char *p = getenv(var);
    ck_assert_msg(p != NULL && p[0] != '\0', "%s is not set", var);
    return p;
}

START_TEST(module_loads_and_serves)
{
    const char *path = module_path("ESTC_UNIT_MODULE_OK");
    ck_assert_int_eq(estc_engine_load_module(ctx, path), ESTC_OK);
    const struct estc_driver *d = NULL;
    ck_assert_int_eq(estc_engine_find(ctx, "unitmod:", &d), ESTC_OK);
    ck_assert_str_eq(d->description, "unit test module");
    estc_buf b = {0};
    ck_assert_int_eq(estc_key_public(ctx, "unitmod:k", &b), ESTC_ERR_TIMEOUT);
    ck_assert_uint_eq(estc_engine_caps(ctx, "unitmod:"), 0);
    /* Twice: the scheme is taken. */
    ck_assert_int_eq(estc_engine_load_module(ctx, path), ESTC_ERR_EXISTS);
    ck_assert_int_eq(estc_key_public(ctx, "unitmod:k", &b), ESTC_ERR_TIMEOUT);
}
END_TEST

START_TEST(module_load_failures)
{
    ck_assert_int_eq(estc_engine_load_module(ctx, "/nonexistent/driver.so"), ESTC_ERR_IO);
    ck_assert(detail_has("cannot load driver module: "));
    ck_assert(detail_has("/nonexistent/driver.so"));

    const char *path = module_path("ESTC_UNIT_MODULE_NULL_ENTRY");
    ck_assert_int_eq(estc_engine_load_module(ctx, path), ESTC_ERR_DRIVER);
    char want[1200];
    snprintf(want, sizeof(want), "%s: no estc_driver_entry() entry point or it returned NULL",
             path);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), want);

    path = module_path("ESTC_UNIT_MODULE_NO_ENTRY");
    ck_assert_int_eq(estc_engine_load_module(ctx, path), ESTC_ERR_DRIVER);
    snprintf(want, sizeof(want), "%s: no estc_driver_entry() entry point or it returned NULL",
             path);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), want);

    path = module_path("ESTC_UNIT_MODULE_API_V1");
    ck_assert_int_eq(estc_engine_load_module(ctx, path), ESTC_ERR_DRIVER);
    ck_assert(detail_has("driver API version 1, this library speaks 2"));
    ck_assert(detail_has("rebuild the driver"));
    ck_assert(!registered("unitmodv1:"));

    ck_assert_int_eq(estc_engine_load_module(ctx, ""), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_engine_load_module(ctx, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_engine_load_module(NULL, path), ESTC_ERR_INVALID_ARG);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = unit_tcase(s, "registration");
    tcase_add_test(tc, missing_required_op_named);
    tcase_add_test(tc, bad_schemes_refused);
    tcase_add_test(tc, duplicate_scheme_exists);
    tcase_add_test(tc, unknown_caps_refused);
    tcase_add_test(tc, cap_and_op_go_together);
    tcase_add_test(tc, other_api_versions_refused);
    tcase_add_test(tc, init_failure_registers_nothing);
    tcase_add_test(tc, state_zeroed_and_passed);
    tcase_add_test(tc, cleanup_in_reverse_order);
    tc = unit_tcase(s, "capabilities");
    tcase_add_test(tc, builtin_caps);
    tcase_add_test(tc, find_cap_in_registration_order);
    tcase_add_test(tc, attributes_driver_gets_parsed_address);
    tcase_add_test(tc, opaque_driver_gets_body_only);
    tcase_add_test(tc, unknown_scheme_and_bad_address);
    tcase_add_test(tc, key_export_by_capability);
    tcase_add_test(tc, key_export_mem_round_trip);
    tcase_add_test(tc, defaults_fill_missing_attributes);
    tcase_add_test(tc, parsed_address_kept);
    tcase_add_test(tc, query_text_verbatim);
    tcase_add_test(tc, key_file_path_by_capability);
    tcase_add_test(tc, address_derive_checks);
    tc = unit_tcase(s, "modules");
    tcase_add_test(tc, module_loads_and_serves);
    tcase_add_test(tc, module_load_failures);
    return unit_run(s);
}
