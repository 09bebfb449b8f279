/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the address parser: estc_address_parse() with and without
 * RFC 7512 attributes, estc_address_get(), estc_address_attr(),
 * estc_pct_decode() and the limits of estc_address_scheme().
 */
#include "unit_util.h"

/* Parses @text or fails the test. */
static estc_address *parse_ok(const char *text, bool attributes)
{
    estc_address *a = NULL;
    estc_err err = estc_address_parse(text, attributes, &a);
    ck_assert_msg(err == ESTC_OK, "\"%s\" refused with %s", text, estc_err_name(err));
    ck_assert_ptr_nonnull(a);
    return a;
}

/* Asserts that @text is refused as ESTC_ERR_BAD_ADDRESS and *out untouched. */
static void parse_bad(const char *text, bool attributes)
{
    estc_address *sentinel = (estc_address *)&sentinel;
    estc_address *a = sentinel;
    estc_err err = estc_address_parse(text, attributes, &a);
    ck_assert_msg(err == ESTC_ERR_BAD_ADDRESS, "\"%s\" (attributes %d) gave %s, not BAD_ADDRESS",
                  text, attributes, estc_err_name(err));
    ck_assert_ptr_eq(a, sentinel);
}

static void assert_attr(const estc_attr *at, const char *name, const char *value, size_t len)
{
    ck_assert_ptr_nonnull(at);
    ck_assert_str_eq(at->name, name);
    ck_assert_uint_eq(at->value_len, len);
    ck_assert_mem_eq(at->value, value, len);
    ck_assert_int_eq(at->value[len], '\0');
}

START_TEST(path_and_query_attributes)
{
    const char *text = "pkcs11:token=T;object=K;id=%01?module-path=/m.so&pin-source=file:/p";
    estc_address *a = parse_ok(text, true);
    ck_assert_str_eq(a->text, text);
    ck_assert_ptr_ne(a->text, text); /* a copy, not the caller's string */
    ck_assert_str_eq(a->scheme, "pkcs11");
    ck_assert_str_eq(a->body, "token=T;object=K;id=%01?module-path=/m.so&pin-source=file:/p");
    ck_assert_uint_eq(a->n_path, 3);
    ck_assert_uint_eq(a->n_query, 2);
    assert_attr(&a->path[0], "token", "T", 1);
    assert_attr(&a->path[1], "object", "K", 1);
    assert_attr(&a->path[2], "id", "\x01", 1);
    assert_attr(&a->query[0], "module-path", "/m.so", 5);
    assert_attr(&a->query[1], "pin-source", "file:/p", 7);
    /* estc_address_get() finds path and query attributes, in place. */
    ck_assert_ptr_eq(estc_address_get(a, "object"), &a->path[1]);
    ck_assert_ptr_eq(estc_address_get(a, "pin-source"), &a->query[1]);
    estc_address_free(a);
}
END_TEST

START_TEST(question_mark_handling)
{
    /* Only the first '?' starts the query; later ones belong to a value. */
    estc_address *a = parse_ok("x:a=1?b=2?c=3", true);
    ck_assert_uint_eq(a->n_path, 1);
    ck_assert_uint_eq(a->n_query, 1);
    assert_attr(&a->path[0], "a", "1", 1);
    assert_attr(&a->query[0], "b", "2?c=3", 5);
    ck_assert_ptr_null(estc_address_get(a, "c"));
    estc_address_free(a);

    a = parse_ok("x:?b=2", true); /* a query and no path */
    ck_assert_uint_eq(a->n_path, 0);
    ck_assert_uint_eq(a->n_query, 1);
    assert_attr(&a->query[0], "b", "2", 1);
    estc_address_free(a);

    a = parse_ok("x:a=1?", true); /* an empty query */
    ck_assert_uint_eq(a->n_path, 1);
    ck_assert_uint_eq(a->n_query, 0);
    estc_address_free(a);

    a = parse_ok("x:?", true);
    ck_assert_uint_eq(a->n_path, 0);
    ck_assert_uint_eq(a->n_query, 0);
    ck_assert_str_eq(a->body, "?");
    estc_address_free(a);

    /* An encoded '?' is a value, not the start of a query. */
    a = parse_ok("x:a=%3F;b=%3f", true);
    ck_assert_uint_eq(a->n_path, 2);
    ck_assert_uint_eq(a->n_query, 0);
    assert_attr(&a->path[0], "a", "?", 1);
    assert_attr(&a->path[1], "b", "?", 1);
    estc_address_free(a);

    /* '&' separates query attributes only; ';' path attributes only. */
    a = parse_ok("x:a=1&2?b=3;4", true);
    ck_assert_uint_eq(a->n_path, 1);
    ck_assert_uint_eq(a->n_query, 1);
    assert_attr(&a->path[0], "a", "1&2", 3);
    assert_attr(&a->query[0], "b", "3;4", 3);
    estc_address_free(a);
}
END_TEST

START_TEST(percent_decoding)
{
    estc_address *a = parse_ok("x:a=%41%62;b=%2f%2F;c=%00;d=a%00b;e=;f=1+2;g=%25;h=x=y", true);
    ck_assert_uint_eq(a->n_path, 8);
    assert_attr(estc_address_get(a, "a"), "a", "Ab", 2);
    assert_attr(estc_address_get(a, "b"), "b", "//", 2);
    /* %00: one byte, a NUL, and the terminating NUL after it. */
    assert_attr(estc_address_get(a, "c"), "c", "\0", 1);
    assert_attr(estc_address_get(a, "d"), "d", "a\0b", 3);
    assert_attr(estc_address_get(a, "e"), "e", "", 0);
    assert_attr(estc_address_get(a, "f"), "f", "1+2", 3); /* '+' is not a space */
    assert_attr(estc_address_get(a, "g"), "g", "%", 1);   /* decoded once only */
    assert_attr(estc_address_get(a, "h"), "h", "x=y", 3); /* the first '=' ends the name */
    /* The body stays encoded. */
    ck_assert_str_eq(a->body, "a=%41%62;b=%2f%2F;c=%00;d=a%00b;e=;f=1+2;g=%25;h=x=y");
    estc_address_free(a);

    /* Encoded control characters are values like any other. */
    a = parse_ok("x:?nl=%0A&del=%7f&hi=%ff", true);
    assert_attr(estc_address_get(a, "nl"), "nl", "\n", 1);
    assert_attr(estc_address_get(a, "del"), "del", "\x7f", 1);
    assert_attr(estc_address_get(a, "hi"), "hi", "\xff", 1);
    estc_address_free(a);
}
END_TEST

START_TEST(bad_percent_escapes)
{
    const char *bad[] = {
        "x:a=%2",     "x:a=%zz",    "x:a=%",        "x:a=%g0",        "x:a=%0g",
        "x:a=%2;b=1", "x:b=1?a=%2", "x:b=1?a=%2&c", "x:b=1?a=%2&c=3", "x:a=%%41",
        "x:a=%-1",    "x:a=% 1",    "x:a=1%",       "x:a=%4%41",
    };
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++)
        parse_bad(bad[i], true);
    /* Opaque addresses are not decoded, so the same texts are fine there. */
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        estc_address *a = parse_ok(bad[i], false);
        ck_assert_str_eq(a->body, bad[i] + 2);
        estc_address_free(a);
    }
}
END_TEST

START_TEST(segments_and_names)
{
    /* A segment without '=' and empty or malformed names are refused. */
    char name65[80];
    memcpy(name65, "x:", 2);
    memset(name65 + 2, 'n', 65);
    strcpy(name65 + 67, "=1");
    const char *bad[] = {
        "x:a",   "x:a=1;b", "x:a=1?b",  "x:a=1?b=2&c", "x:=1",         "x:a=1;=2",
        "x:?=2", "x:a b=1", "x:a%41=1", "x:a/b=1",     "x:\xc3\xa9=1", name65,
    };
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++)
        parse_bad(bad[i], true);

    /* Names of letters, digits, '.', '-', '_' up to 64 bytes. */
    char name64[80];
    memcpy(name64, "x:", 2);
    memset(name64 + 2, 'n', 64);
    strcpy(name64 + 66, "=1");
    estc_address *a = parse_ok(name64, true);
    ck_assert_uint_eq(a->n_path, 1);
    ck_assert_uint_eq(strlen(a->path[0].name), 64);
    estc_address_free(a);
    a = parse_ok("x:a.b-c_D9=v", true);
    assert_attr(estc_address_get(a, "a.b-c_D9"), "a.b-c_D9", "v", 1);
    estc_address_free(a);
}
END_TEST

START_TEST(empty_segments_skipped)
{
    estc_address *a = parse_ok("x:;;a=1;;;b=2;?&&c=3&&", true);
    ck_assert_uint_eq(a->n_path, 2);
    ck_assert_uint_eq(a->n_query, 1);
    assert_attr(&a->path[0], "a", "1", 1);
    assert_attr(&a->path[1], "b", "2", 1);
    assert_attr(&a->query[0], "c", "3", 1);
    estc_address_free(a);

    const char *empty[] = {"x:", "x:;", "x:;;;", "x:?&", "x:;?&&"};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(empty); i++) {
        a = parse_ok(empty[i], true);
        ck_assert_uint_eq(a->n_path, 0);
        ck_assert_uint_eq(a->n_query, 0);
        ck_assert_str_eq(a->body, empty[i] + 2);
        estc_address_free(a);
    }
}
END_TEST

START_TEST(duplicates_refused)
{
    const char *bad[] = {
        "x:a=1;a=2",         /* in the path */
        "x:a=1;a=1",         /* even with the same value */
        "x:b=0?a=1&a=2",     /* in the query */
        "x:a=1?a=2",         /* across path and query */
        "x:a=1;b=2?c=3&b=4", /* across, not adjacent */
        "x:a=;;a=",          /* empty values */
        "x:pin-value=1?pin-value=1",
    };
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++)
        parse_bad(bad[i], true);
    /* Names are compared whole: a prefix is another name. */
    estc_address *a = parse_ok("x:ab=1;a=2?abc=3", true);
    ck_assert_uint_eq(a->n_path + a->n_query, 3);
    assert_attr(estc_address_get(a, "a"), "a", "2", 1);
    assert_attr(estc_address_get(a, "ab"), "ab", "1", 1);
    assert_attr(estc_address_get(a, "abc"), "abc", "3", 1);
    estc_address_free(a);
}
END_TEST

START_TEST(scheme_lowered_text_verbatim)
{
    estc_address *a = parse_ok("PKCS11:Token=T%41", true);
    ck_assert_str_eq(a->scheme, "pkcs11");
    ck_assert_str_eq(a->text, "PKCS11:Token=T%41");
    ck_assert_str_eq(a->body, "Token=T%41");
    ck_assert_ptr_eq(a->body, a->text + 7);
    assert_attr(&a->path[0], "Token", "TA", 2);
    estc_address_free(a);

    a = parse_ok("MeM.x+Y-1:Name", false);
    ck_assert_str_eq(a->scheme, "mem.x+y-1");
    ck_assert_str_eq(a->text, "MeM.x+Y-1:Name");
    ck_assert_str_eq(a->body, "Name");
    estc_address_free(a);

    /* The longest scheme, and one byte more. */
    char s31[64], s32[64];
    memset(s31, 'S', 31);
    strcpy(s31 + 31, ":b");
    memset(s32, 'S', 32);
    strcpy(s32 + 32, ":b");
    a = parse_ok(s31, false);
    ck_assert_uint_eq(strlen(a->scheme), 31);
    ck_assert_int_eq(a->scheme[0], 's');
    estc_address_free(a);
    parse_bad(s32, false);
    parse_bad("1x:a=1", true);
    parse_bad("noscheme", false);
    parse_bad(":a=1", true);
    parse_bad("", false);
}
END_TEST

START_TEST(control_characters_refused)
{
    const char *bad[] = {"x:a=1\x01", "x:a=\t",    "x:a=1\n",     "x:a=\x7f",
                         "x:\r",      "x\x1b:a=1", "x:a=1;b=\x1f"};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        parse_bad(bad[i], true);
        parse_bad(bad[i], false);
    }
    /* Bytes over 0x7f are not control characters. */
    estc_address *a = parse_ok("mem:\xc3\xa9", false);
    ck_assert_str_eq(a->body, "\xc3\xa9");
    estc_address_free(a);
}
END_TEST

START_TEST(length_limits)
{
    char *text = malloc(ESTC_ADDRESS_MAX + 2);
    ck_assert_ptr_nonnull(text);
    /* "x:v=" and a value up to ESTC_ADDRESS_MAX bytes in all. */
    memcpy(text, "x:v=", 4);
    memset(text + 4, 'q', ESTC_ADDRESS_MAX - 4);
    text[ESTC_ADDRESS_MAX] = '\0';
    estc_address *a = parse_ok(text, true);
    ck_assert_uint_eq(strlen(a->text), ESTC_ADDRESS_MAX);
    ck_assert_uint_eq(a->path[0].value_len, ESTC_ADDRESS_MAX - 4);
    estc_address_free(a);
    a = parse_ok(text, false);
    ck_assert_uint_eq(strlen(a->body), ESTC_ADDRESS_MAX - 2);
    estc_address_free(a);

    text[ESTC_ADDRESS_MAX] = 'q';
    text[ESTC_ADDRESS_MAX + 1] = '\0';
    parse_bad(text, true);
    parse_bad(text, false);
    free(text);
}
END_TEST

/* The redacted copy grows ("pin-value=" + "***"): many empty PINs in one
 * address of the longest length must still fit (opaque: no duplicate rule). */
START_TEST(redacted_copy_of_longest_address)
{
    char *text = malloc(ESTC_ADDRESS_MAX + 1);
    ck_assert_ptr_nonnull(text);
    strcpy(text, "m:");
    size_t len = 2;
    while (len + 11 <= ESTC_ADDRESS_MAX) {
        memcpy(text + len, ";pin-value=", 11);
        len += 11;
    }
    while (len < ESTC_ADDRESS_MAX)
        text[len++] = 'z';
    text[len] = '\0';
    estc_address *a = parse_ok(text, false);
    char *want = malloc(4 * ESTC_ADDRESS_MAX);
    ck_assert_ptr_nonnull(want);
    estc_redact(text, want, 4 * ESTC_ADDRESS_MAX);
    ck_assert_uint_gt(strlen(want), ESTC_ADDRESS_MAX); /* it did grow */
    ck_assert_str_eq(a->redacted, want);
    ck_assert_str_eq(a->text, text);
    estc_address_free(a);
    free(want);
    free(text);
}
END_TEST

START_TEST(opaque_parse_keeps_body)
{
    const char *text = "mem:a;b?c=d&e;;=?%zz=%";
    estc_address *a = parse_ok(text, false);
    ck_assert_str_eq(a->scheme, "mem");
    ck_assert_str_eq(a->text, text);
    ck_assert_str_eq(a->body, "a;b?c=d&e;;=?%zz=%");
    ck_assert_uint_eq(a->n_path, 0);
    ck_assert_uint_eq(a->n_query, 0);
    ck_assert_ptr_null(estc_address_get(a, "c"));
    ck_assert_ptr_null(estc_address_get(a, "a"));
    estc_address_free(a);
    /* The same text is not a valid attribute list. */
    parse_bad(text, true);

    /* Even a well-formed attribute list gives no attributes when opaque. */
    a = parse_ok("mem:token=T;object=K?x=1", false);
    ck_assert_uint_eq(a->n_path, 0);
    ck_assert_uint_eq(a->n_query, 0);
    ck_assert_ptr_null(estc_address_get(a, "token"));
    ck_assert_str_eq(a->body, "token=T;object=K?x=1");
    estc_address_free(a);
}
END_TEST

START_TEST(redacted_field_hides_pin)
{
    estc_address *a = parse_ok("pkcs11:token=T;pin-value=1234;object=k", true);
    ck_assert_str_eq(a->redacted, "pkcs11:token=T;pin-value=***;object=k");
    ck_assert_str_eq(a->text, "pkcs11:token=T;pin-value=1234;object=k"); /* as given */
    assert_attr(estc_address_get(a, "pin-value"), "pin-value", "1234", 4);
    estc_address_free(a);

    a = parse_ok("pkcs11:token=T?pin-value=%31%32&module-path=/m.so", true);
    ck_assert_str_eq(a->redacted, "pkcs11:token=T?pin-value=***&module-path=/m.so");
    assert_attr(estc_address_get(a, "pin-value"), "pin-value", "12", 2);
    estc_address_free(a);

    a = parse_ok("mem:k;pin-value=9876", false);
    ck_assert_str_eq(a->redacted, "mem:k;pin-value=***");
    estc_address_free(a);

    /* Nothing secret: the redacted copy is the text. */
    a = parse_ok("pkcs11:token=T;object=k?pin-source=/etc/pin", true);
    ck_assert_str_eq(a->redacted, a->text);
    estc_address_free(a);
}
END_TEST

START_TEST(address_get_misses)
{
    estc_address *a = parse_ok("x:token=T;object=K?module-path=/m", true);
    ck_assert_ptr_null(estc_address_get(a, "tok"));    /* a prefix of a name */
    ck_assert_ptr_null(estc_address_get(a, "tokens")); /* longer than a name */
    ck_assert_ptr_null(estc_address_get(a, "T"));      /* a value */
    ck_assert_ptr_null(estc_address_get(a, "module"));
    ck_assert_ptr_null(estc_address_get(a, ""));
    ck_assert_ptr_null(estc_address_get(a, NULL));
    ck_assert_ptr_null(estc_address_get(NULL, "token"));
    ck_assert_ptr_nonnull(estc_address_get(a, "module-path"));
    estc_address_free(a);
    estc_address_free(NULL);
}
END_TEST

START_TEST(address_parse_arguments)
{
    estc_address *a = NULL;
    ck_assert_int_eq(estc_address_parse(NULL, true, &a), ESTC_ERR_INVALID_ARG);
    ck_assert_ptr_null(a);
    ck_assert_int_eq(estc_address_parse("x:a=1", true, NULL), ESTC_ERR_INVALID_ARG);
}
END_TEST

START_TEST(address_attr_returns_copies)
{
    const char *text = "x:a=hello;n=1%002?q=%41";
    char *v = NULL;
    size_t n = 99;
    ck_assert_int_eq(estc_address_attr(text, "a", &v, &n), ESTC_OK);
    ck_assert_str_eq(v, "hello");
    ck_assert_uint_eq(n, 5);
    v[0] = 'J'; /* ours to change */
    char *again = NULL;
    ck_assert_int_eq(estc_address_attr(text, "a", &again, NULL), ESTC_OK);
    ck_assert_ptr_ne(again, v);
    ck_assert_str_eq(again, "hello");
    free(again);
    free(v);

    /* A value with a NUL: all bytes copied, and the length says so. */
    ck_assert_int_eq(estc_address_attr(text, "n", &v, &n), ESTC_OK);
    ck_assert_uint_eq(n, 3);
    ck_assert_mem_eq(v, "1\0002", 4);
    free(v);
    ck_assert_int_eq(estc_address_attr(text, "q", &v, &n), ESTC_OK);
    ck_assert_str_eq(v, "A");
    ck_assert_uint_eq(n, 1);
    free(v);

    /* Misses and errors leave *value NULL and value_len alone. */
    v = (char *)"garbage";
    n = 77;
    ck_assert_int_eq(estc_address_attr(text, "nope", &v, &n), ESTC_ERR_NOT_FOUND);
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(n, 77);
    v = (char *)"garbage";
    ck_assert_int_eq(estc_address_attr("x:a=1;a=2", "a", &v, &n), ESTC_ERR_BAD_ADDRESS);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(estc_address_attr("x:a=%zz", "b", &v, &n), ESTC_ERR_BAD_ADDRESS);
    ck_assert_ptr_null(v);
    ck_assert_uint_eq(n, 77);

    ck_assert_int_eq(estc_address_attr(NULL, "a", &v, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_attr(text, NULL, &v, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_attr(text, "", &v, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_attr(text, "a", NULL, NULL), ESTC_ERR_INVALID_ARG);
}
END_TEST

START_TEST(pct_decode)
{
    char *out = NULL;
    size_t n = 0;
    ck_assert_int_eq(estc_pct_decode("a%41%4a%4A%00z", 14, &out, &n), ESTC_OK);
    ck_assert_uint_eq(n, 6);
    ck_assert_mem_eq(out, "aAJJ\0z", 7);
    free(out);

    /* Only @len bytes are read: a '%' cut by the length is malformed. */
    ck_assert_int_eq(estc_pct_decode("ab%41", 2, &out, &n), ESTC_OK);
    ck_assert_str_eq(out, "ab");
    ck_assert_uint_eq(n, 2);
    free(out);
    out = (char *)"untouched";
    ck_assert_int_eq(estc_pct_decode("%41", 2, &out, &n), ESTC_ERR_BAD_ADDRESS);
    ck_assert_str_eq(out, "untouched");
    ck_assert_int_eq(estc_pct_decode("%41", 1, &out, &n), ESTC_ERR_BAD_ADDRESS);

    const char *bad[] = {"%", "%2", "%zz", "%2g", "x%", "%%"};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++)
        ck_assert_int_eq(estc_pct_decode(bad[i], strlen(bad[i]), &out, &n), ESTC_ERR_BAD_ADDRESS);

    /* Empty input, and the optional length. */
    ck_assert_int_eq(estc_pct_decode(NULL, 0, &out, &n), ESTC_OK);
    ck_assert_str_eq(out, "");
    ck_assert_uint_eq(n, 0);
    free(out);
    ck_assert_int_eq(estc_pct_decode("%20", 3, &out, NULL), ESTC_OK);
    ck_assert_str_eq(out, " ");
    free(out);

    ck_assert_int_eq(estc_pct_decode(NULL, 1, &out, &n), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_pct_decode("a", 1, NULL, &n), ESTC_ERR_INVALID_ARG);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("address");
    TCase *tc = unit_tcase(s, "parse");
    tcase_add_test(tc, path_and_query_attributes);
    tcase_add_test(tc, question_mark_handling);
    tcase_add_test(tc, percent_decoding);
    tcase_add_test(tc, bad_percent_escapes);
    tcase_add_test(tc, segments_and_names);
    tcase_add_test(tc, empty_segments_skipped);
    tcase_add_test(tc, duplicates_refused);
    tcase_add_test(tc, scheme_lowered_text_verbatim);
    tcase_add_test(tc, control_characters_refused);
    tcase_add_test(tc, length_limits);
    tcase_add_test(tc, redacted_copy_of_longest_address);
    tcase_add_test(tc, opaque_parse_keeps_body);
    tcase_add_test(tc, redacted_field_hides_pin);
    tcase_add_test(tc, address_get_misses);
    tcase_add_test(tc, address_parse_arguments);
    tc = unit_tcase(s, "helpers");
    tcase_add_test(tc, address_attr_returns_copies);
    tcase_add_test(tc, pct_decode);
    return unit_run(s);
}
