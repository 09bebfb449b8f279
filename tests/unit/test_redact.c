/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the redaction of secrets: estc_redact() itself, and that
 * neither the detail text (estc_ctx_error_detail()) nor the log callback
 * ever sees a PIN when an operation fails on an address carrying one.
 */
#include "unit_util.h"

#define PIN "1234"

static const char *redact(const char *text, char *out, size_t size)
{
    const char *r = estc_redact(text, out, size);
    ck_assert_ptr_eq(r, out);
    return r;
}

START_TEST(redact_path_and_query)
{
    char out[256];
    ck_assert_str_eq(redact("pkcs11:token=T;pin-value=1234;object=k", out, sizeof(out)),
                     "pkcs11:token=T;pin-value=***;object=k");
    ck_assert_str_eq(redact("pkcs11:token=T?pin-value=1234&module-path=/m.so", out, sizeof(out)),
                     "pkcs11:token=T?pin-value=***&module-path=/m.so");
    ck_assert_str_eq(redact("pkcs11:pin-value=1234?module-path=/m.so", out, sizeof(out)),
                     "pkcs11:pin-value=***?module-path=/m.so");
    ck_assert_str_eq(redact("mem:k;pin-value=%31%32", out, sizeof(out)), "mem:k;pin-value=***");
    /* An empty PIN is hidden all the same: its length is no one's business. */
    ck_assert_str_eq(redact("x:pin-value=;a=1", out, sizeof(out)), "x:pin-value=***;a=1");
    ck_assert_str_eq(redact("x:a=1?pin-value=", out, sizeof(out)), "x:a=1?pin-value=***");
}
END_TEST

START_TEST(redact_name_case)
{
    char out[256];
    redact("x:PIN-VALUE=1234;Pin-Value=5678?pIn-VaLuE=9012&a=B", out, sizeof(out));
    /* The name may come out in either case; the values never do. */
    ck_assert_int_eq(strcasecmp(out, "x:pin-value=***;pin-value=***?pin-value=***&a=B"), 0);
    ck_assert(!unit_has(out, "1234"));
    ck_assert(!unit_has(out, "5678"));
    ck_assert(!unit_has(out, "9012"));
    ck_assert(unit_has(out, "&a=B")); /* the rest keeps its case */
}
END_TEST

START_TEST(redact_several_and_terminators)
{
    char out[256];
    ck_assert_str_eq(
        redact("a pin-value=1 b pin-value=22\tc pin-value=333\nd&pin-value=4?e;pin-value=55", out,
               sizeof(out)),
        "a pin-value=*** b pin-value=***\tc pin-value=***\nd&pin-value=***?e;pin-value=***");
    /* Other attributes, even close relatives, are kept as they are. */
    ck_assert_str_eq(redact("x:pin-source=/etc/pin;pin=1;value=2;pinvalue=3", out, sizeof(out)),
                     "x:pin-source=/etc/pin;pin=1;value=2;pinvalue=3");
    ck_assert_str_eq(redact("no secrets here", out, sizeof(out)), "no secrets here");
    ck_assert_str_eq(redact("", out, sizeof(out)), "");
}
END_TEST

START_TEST(redact_truncation)
{
    const char *text = "pkcs11:token=T;pin-value=987654321;object=k?pin-value=9876&x=y";
    char full[256];
    redact(text, full, sizeof(full));
    ck_assert_str_eq(full, "pkcs11:token=T;pin-value=***;object=k?pin-value=***&x=y");
    size_t full_len = strlen(full);
    /* Every size: NUL-terminated, a prefix of the whole redaction, no digit
     * of a PIN, never a byte past the end. */
    for (size_t size = 1; size <= full_len + 2; size++) {
        char out[256];
        memset(out, 'Z', sizeof(out));
        redact(text, out, size);
        size_t want = size - 1 < full_len ? size - 1 : full_len;
        ck_assert_msg(strlen(out) == want, "size %zu: %zu bytes", size, strlen(out));
        ck_assert_msg(strncmp(out, full, want) == 0, "size %zu: \"%s\"", size, out);
        ck_assert_int_eq(out[want], '\0');
        ck_assert_int_eq(out[size], 'Z');
        ck_assert_ptr_null(strpbrk(out, "56789"));
    }
}
END_TEST

START_TEST(redact_null_and_tiny)
{
    char out[8];
    memset(out, 'Z', sizeof(out));
    ck_assert_str_eq(redact(NULL, out, sizeof(out)), "");
    memset(out, 'Z', sizeof(out));
    ck_assert_str_eq(redact("mem:k;pin-value=1", out, 1), "");
    ck_assert_int_eq(out[1], 'Z');
    memset(out, 'Z', sizeof(out));
    redact("abc", out, 0); /* no room: nothing written */
    ck_assert_int_eq(out[0], 'Z');
    ck_assert_ptr_null(estc_redact("abc", NULL, 8));
    ck_assert_str_eq(redact("pin-value=1", out, 5), "pin-");
}
END_TEST

/* ---- detail texts and log lines ----------------------------------------- */

static struct unit_log logged;

static void capture_all(void)
{
    memset(&logged, 0, sizeof(logged));
    ck_assert_int_eq(estc_ctx_set_log(ctx, ESTC_LOG_DEBUG, unit_log_fn, &logged), ESTC_OK);
}

/*
 * Asserts that @text is @start, a separator of at most three of '"', ':'
 * and ' ', then @end. The separator is loose on purpose: a PIN value is
 * hidden up to the next ';', '&', '?' or blank, so the '": ' that follows an
 * address ending in a PIN goes with it ("pin-value=*** no key there").
 */
static void assert_around(const char *text, const char *start, const char *end)
{
    size_t tl = strlen(text), sl = strlen(start), el = strlen(end);
    bool ok = tl >= sl + el && tl <= sl + el + 3 && strncmp(text, start, sl) == 0 &&
              strcmp(text + tl - el, end) == 0;
    for (size_t i = sl; ok && i < tl - el; i++)
        ok = strchr("\": ", text[i]) != NULL;
    ck_assert_msg(ok, "\"%s\" is not \"%s\" ... \"%s\"", text, start, end);
}

static void assert_detail(const char *start, const char *end)
{
    assert_around(estc_ctx_error_detail(ctx), start, end);
}

/* Neither the detail text nor any line logged so far holds @secret. */
static void assert_hidden(const char *secret, const char *what)
{
    const char *detail = estc_ctx_error_detail(ctx);
    ck_assert_msg(!unit_has(detail, secret), "%s: detail \"%s\"", what, detail);
    for (int i = 0; i < logged.lines && i < UNIT_LOG_MAX; i++)
        ck_assert_msg(!unit_has(logged.text[i], secret), "%s: log \"%s\"", what, logged.text[i]);
}

START_TEST(mem_failures_hide_pin)
{
    const char *addr = "mem:x;pin-value=" PIN;
    estc_buf b = {0};
    uint8_t digest[32] = {0};
    char *path = NULL;
    capture_all();

    ck_assert_int_eq(estc_key_public(ctx, addr, &b), ESTC_ERR_NOT_FOUND);
    assert_detail("mem:x;pin-value=***", "no key there");
    ck_assert_int_eq(logged.lines, 1);
    ck_assert_int_eq(logged.level[0], ESTC_LOG_ERROR);
    assert_around(logged.text[0], "not found: mem:x;pin-value=***", "no key there");

    ck_assert_int_eq(estc_key_sign(ctx, addr, ESTC_SIG_ECDSA, ESTC_HASH_SHA256, digest, 32, &b),
                     ESTC_ERR_NOT_FOUND);
    assert_detail("mem:x;pin-value=***", "no key there");
    ck_assert_int_eq(estc_key_remove(ctx, addr), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_cert_load(ctx, addr, &b), ESTC_ERR_NOT_FOUND);
    assert_detail("mem:x;pin-value=***", "no certificate there");
    ck_assert_int_eq(estc_cert_remove(ctx, addr), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_key_export(ctx, addr, &b), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_key_file_path(ctx, addr, &path), ESTC_ERR_UNSUPPORTED);
    assert_detail("mem:x;pin-value=***", "the engine's keys are not files");
    ck_assert_ptr_null(path);
    assert_hidden(PIN, "mem: operations on a missing object");

    /* A key there: creating another one at the address fails, naming it. */
    ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_ERR_EXISTS);
    assert_detail("mem:x;pin-value=***", "an object is there already");
    ck_assert_int_eq(estc_key_sign(ctx, addr, ESTC_SIG_RSA_PSS, ESTC_HASH_SHA256, digest, 32, &b),
                     ESTC_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(estc_ctx_error_detail(ctx), "mem:x;pin-value=***"));
    assert_hidden(PIN, "mem: operations on a key");
    ck_assert_ptr_null(b.data);
}
END_TEST

START_TEST(framework_failures_hide_pin)
{
    estc_buf b = {0};
    char *out = NULL;
    capture_all();

    /* No valid scheme: the address is quoted, redacted. */
    ck_assert_int_eq(estc_key_public(ctx, "9mem:x;pin-value=" PIN, &b), ESTC_ERR_BAD_ADDRESS);
    assert_detail("bad address \"9mem:x;pin-value=***", "no valid scheme");
    /* Unknown scheme: the scheme alone is named. */
    ck_assert_int_eq(estc_key_public(ctx, "nosuch:x;pin-value=" PIN, &b), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "no engine for scheme \"nosuch:\"");
    /* A file: engine keeps its keys: the refusal names the address. */
    ck_assert_int_eq(estc_key_export(ctx, "file:/nonexistent/k.pem;pin-value=" PIN, &b),
                     ESTC_ERR_UNSUPPORTED);
    assert_detail("file:/nonexistent/k.pem;pin-value=***", "the engine keeps its keys to itself");
    ck_assert_int_eq(estc_key_public(ctx, "file:/nonexistent/k.pem;pin-value=" PIN, &b),
                     ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_address_derive(ctx, "file:", ESTC_OBJ_KEY, "n", &out),
                     ESTC_ERR_BAD_ADDRESS);
    /* Control characters and over-long addresses are refused and quoted. */
    ck_assert_int_eq(estc_key_public(ctx, "mem:x;pin-value=" PIN "\x01", &b), ESTC_ERR_BAD_ADDRESS);
    char *huge = malloc(ESTC_ADDRESS_MAX + 40);
    ck_assert_ptr_nonnull(huge);
    strcpy(huge, "mem:x;pin-value=" PIN);
    memset(huge + strlen(huge), 'z', ESTC_ADDRESS_MAX);
    huge[ESTC_ADDRESS_MAX + 10] = '\0';
    ck_assert_int_eq(estc_key_public(ctx, huge, &b), ESTC_ERR_BAD_ADDRESS);
    free(huge);
    assert_hidden(PIN, "framework checks");
    ck_assert_int_ge(logged.lines, 7);
    ck_assert_ptr_null(out);
}
END_TEST

START_TEST(lifecycle_logs_hide_pin)
{
    estc_lifecycle *lc = NULL;
    capture_all();
    ck_assert_int_eq(estc_lifecycle_new(ctx, &lc), ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_key_generate(lc, "mem:a;pin-value=" PIN, ESTC_KEY_EC_P256),
                     ESTC_OK);
    ck_assert_int_eq(estc_lifecycle_key_generate(lc, "mem:a;pin-value=" PIN, ESTC_KEY_EC_P256),
                     ESTC_ERR_EXISTS);
    assert_detail("mem:a;pin-value=***", "already recorded");
    ck_assert_int_eq(estc_lifecycle_supersede(lc, "mem:a;pin-value=" PIN), ESTC_ERR_STATE);
    ck_assert_int_eq(estc_lifecycle_supersede(lc, "mem:b;pin-value=" PIN), ESTC_ERR_NOT_FOUND);
    ck_assert_int_eq(estc_lifecycle_cleanup(lc), ESTC_OK); /* logs each removal */
    bool removal_logged = false;
    for (int i = 0; i < logged.lines && i < UNIT_LOG_MAX; i++) {
        if (strncmp(logged.text[i], "mem:a;pin-value=***", 19) == 0) {
            assert_around(logged.text[i], "mem:a;pin-value=***", "removed");
            removal_logged = true;
        }
    }
    ck_assert(removal_logged);
    assert_hidden(PIN, "lifecycle");
    estc_lifecycle_free(lc);
}
END_TEST

/* A driver that reports failures the way drivers do: the whole address as
 * it was given (addr->text), through estc_error() and estc_log(). */
static estc_err loud_public(estc_ctx *c, void *s, const estc_address *a, estc_buf *b)
{
    (void)s, (void)b;
    estc_log(c, ESTC_LOG_INFO, "logging in to %s", a->text);
    return estc_error(c, ESTC_ERR_AUTH, "%s: C_Login: CKR_PIN_INCORRECT", a->text);
}

START_TEST(driver_failure_hides_pin)
{
    static struct estc_driver drv;
    drv = unit_stub_driver("loud", ESTC_CAP_ATTRIBUTES);
    drv.key_public = loud_public;
    ck_assert_int_eq(estc_engine_register(ctx, &drv), ESTC_OK);
    capture_all();
    estc_buf b = {0};
    ck_assert_int_eq(estc_key_public(ctx, "loud:token=T;pin-value=" PIN "?module-path=/m.so", &b),
                     ESTC_ERR_AUTH);
    ck_assert_str_eq(estc_ctx_error_detail(ctx),
                     "loud:token=T;pin-value=***?module-path=/m.so: C_Login: CKR_PIN_INCORRECT");
    ck_assert_int_eq(logged.lines, 2);
    ck_assert_int_eq(logged.level[0], ESTC_LOG_INFO);
    ck_assert_str_eq(logged.text[0], "logging in to loud:token=T;pin-value=***?module-path=/m.so");
    ck_assert_int_eq(logged.level[1], ESTC_LOG_ERROR);
    ck_assert_str_eq(logged.text[1], "authentication failed (PIN or authorization): "
                                     "loud:token=T;pin-value=***?module-path=/m.so: C_Login: "
                                     "CKR_PIN_INCORRECT");

    /* The same PIN in the query, percent-encoded. */
    ck_assert_int_eq(estc_key_public(ctx, "loud:token=T?pin-value=%31%32%33%34", &b),
                     ESTC_ERR_AUTH);
    assert_detail("loud:token=T?pin-value=***", "C_Login: CKR_PIN_INCORRECT");
    assert_hidden(PIN, "driver");
    assert_hidden("%31", "driver");

    /* A malformed attribute list is refused before the driver runs; the
     * refusal quotes the address, redacted. */
    ck_assert_int_eq(estc_key_public(ctx, "loud:pin-value=" PIN ";pin-value=" PIN, &b),
                     ESTC_ERR_BAD_ADDRESS);
    assert_detail("bad address \"loud:pin-value=***;pin-value=***",
                  "attributes must be name=value, each given once, with valid percent-encoding");
    ck_assert_int_eq(logged.lines, 5);
    assert_hidden(PIN, "bad attributes");
}
END_TEST

START_TEST(long_detail_never_shows_pin)
{
    /* The detail text has a fixed size: whatever is cut, no digit of the
     * PIN may survive around the cut. */
    capture_all();
    char filler[600];
    for (size_t pad = 470; pad < 530; pad++) {
        memset(filler, 'a', pad);
        filler[pad] = '\0';
        estc_error(ctx, ESTC_ERR_ENGINE, "%s mem:k;pin-value=9876543210;x=y", filler);
        const char *d = estc_ctx_error_detail(ctx);
        ck_assert_msg(strpbrk(d, "0123456789") == NULL, "pad %zu: a digit in the detail", pad);
        ck_assert_uint_le(strlen(d), 511);
        ck_assert_uint_ge(strlen(d), pad < 511 ? pad : 511);
    }
    for (int i = 0; i < logged.lines && i < UNIT_LOG_MAX; i++)
        ck_assert_ptr_null(strpbrk(logged.text[i], "0123456789"));
    /* A log line longer than any buffer: cut, redacted. */
    char big[2000];
    memset(big, 'b', 1010);
    strcpy(big + 1010, " pin-value=55555555555555555555555555");
    memset(&logged, 0, sizeof(logged));
    estc_log(ctx, ESTC_LOG_WARNING, "%s", big);
    ck_assert_int_eq(logged.lines, 1);
    ck_assert_ptr_null(strchr(logged.text[0], '5'));
}
END_TEST

/* ---- regressions: each of these failed before its fix ------------------ */

/*
 * Regression (engines/error.c estc_redact vs engines/address.c): a PIN
 * value is hidden only up to the next ';', '&', '?' or blank, but the
 * parser hands drivers a path value up to ';' or '?' only, and a query
 * value up to '&' only. RFC 7512 allows a raw '&' in path values
 * (pk11-path-res-avail) and a raw '?' in query values
 * (pk11-query-res-avail), so the PIN "1234&5678" or "1234?5678" is accepted
 * whole by the parser, and its tail "5678" shows in addr->redacted, in every
 * detail text and in the log.
 */
START_TEST(regression_redact_shows_tail_of_pin)
{
    static struct estc_driver drv;
    drv = unit_stub_driver("loud", ESTC_CAP_ATTRIBUTES);
    drv.key_public = loud_public;
    ck_assert_int_eq(estc_engine_register(ctx, &drv), ESTC_OK);
    const struct {
        const char *addr;
        const char *pin;
    } cases[] = {
        {"loud:pin-value=1234&5678;object=k", "1234&5678"}, /* '&' in a path value */
        {"loud:object=k?pin-value=1234?5678", "1234?5678"}, /* '?' in a query value */
    };
    char failures[1024] = "";
    for (size_t i = 0; i < UNIT_ARRAY_LEN(cases); i++) {
        estc_address *a = NULL;
        ck_assert_int_eq(estc_address_parse(cases[i].addr, true, &a), ESTC_OK);
        const estc_attr *pin = estc_address_get(a, "pin-value");
        /* The parser takes the whole value as the PIN... */
        ck_assert_ptr_nonnull(pin);
        ck_assert_str_eq(pin->value, cases[i].pin);
        /* ...so all of it must be hidden. */
        if (unit_has(a->redacted, "5678"))
            snprintf(failures + strlen(failures), sizeof(failures) - strlen(failures),
                     " redacted \"%s\";", a->redacted);
        estc_address_free(a);

        capture_all();
        estc_buf b = {0};
        ck_assert_int_eq(estc_key_public(ctx, cases[i].addr, &b), ESTC_ERR_AUTH);
        if (unit_has(estc_ctx_error_detail(ctx), "5678"))
            snprintf(failures + strlen(failures), sizeof(failures) - strlen(failures),
                     " detail \"%s\";", estc_ctx_error_detail(ctx));
    }
    ck_assert_msg(failures[0] == '\0', "part of a PIN shown:%s", failures);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("redact");
    TCase *tc = unit_tcase(s, "estc_redact");
    tcase_add_test(tc, redact_path_and_query);
    tcase_add_test(tc, redact_name_case);
    tcase_add_test(tc, redact_several_and_terminators);
    tcase_add_test(tc, redact_truncation);
    tcase_add_test(tc, redact_null_and_tiny);
    tc = unit_tcase(s, "details and logs");
    tcase_add_test(tc, mem_failures_hide_pin);
    tcase_add_test(tc, framework_failures_hide_pin);
    tcase_add_test(tc, lifecycle_logs_hide_pin);
    tcase_add_test(tc, driver_failure_hides_pin);
    tcase_add_test(tc, long_detail_never_shows_pin);
    tc = unit_tcase(s, "regressions");
    tcase_add_test(tc, regression_redact_shows_tail_of_pin);
    return unit_run(s);
}
