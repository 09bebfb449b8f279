/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of address generators: the default one (a name from the
 * SHA-256 of the certificate, random for keys, placed by the driver),
 * custom generators and what is refused from them, and estc_generator_set().
 */
#include <ctype.h>

#include <openssl/sha.h>

#include "unit_util.h"

/* "estc-<kind>-" and the first 16 hex digits of the SHA-256 of @der. */
static void default_name(const char *kind, const estc_buf *der, char *out, size_t size)
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    ck_assert_ptr_nonnull(SHA256(der->data, der->len, md));
    int n = snprintf(out, size, "estc-%s-", kind);
    for (int i = 0; i < 8; i++)
        n += snprintf(out + n, size - (size_t)n, "%02x", md[i]);
}

static char *generate(const char *prefix, estc_obj_kind kind, const estc_buf *der)
{
    char *addr = NULL;
    estc_err err = estc_address_generate(ctx, prefix, kind, der != NULL ? der->data : NULL,
                                         der != NULL ? der->len : 0, &addr);
    ck_assert_msg(err == ESTC_OK, "%s: %s (%s)", prefix, estc_err_name(err),
                  estc_ctx_error_detail(ctx));
    ck_assert_ptr_nonnull(addr);
    return addr;
}

START_TEST(default_is_deterministic)
{
    estc_buf ca1 = {0}, ca2 = {0};
    unit_make_cert("CA one", &ca1);
    unit_make_cert("CA two", &ca2);
    char name1[64], name2[64], want[128];
    default_name("trust", &ca1, name1, sizeof(name1));
    default_name("trust", &ca2, name2, sizeof(name2));
    ck_assert_str_ne(name1, name2);

    char *a = generate("mem:", ESTC_OBJ_TRUST, &ca1);
    char *b = generate("mem:", ESTC_OBJ_TRUST, &ca1);
    char *c = generate("mem:", ESTC_OBJ_TRUST, &ca2);
    snprintf(want, sizeof(want), "mem:%s", name1);
    ck_assert_str_eq(a, want); /* same DER, same address */
    ck_assert_str_eq(b, want);
    snprintf(want, sizeof(want), "mem:%s", name2);
    ck_assert_str_eq(c, want); /* other DER, other address */
    free(a);
    free(b);
    free(c);

    /* The driver places the name under the prefix. */
    a = generate("mem:dev1-", ESTC_OBJ_TRUST, &ca1);
    snprintf(want, sizeof(want), "mem:dev1-%s", name1);
    ck_assert_str_eq(a, want);
    free(a);
    a = generate("file:/var/lib/estc/", ESTC_OBJ_TRUST, &ca1);
    snprintf(want, sizeof(want), "file:/var/lib/estc/%s.ca.pem", name1);
    ck_assert_str_eq(a, want);
    free(a);
    /* The kind is part of the name. */
    default_name("cert", &ca1, name1, sizeof(name1));
    a = generate("mem:", ESTC_OBJ_CERT, &ca1);
    snprintf(want, sizeof(want), "mem:%s", name1);
    ck_assert_str_eq(a, want);
    free(a);
    estc_buf_free(&ca1);
    estc_buf_free(&ca2);
}
END_TEST

START_TEST(default_keys_are_random)
{
    char *seen[16];
    for (int i = 0; i < 16; i++) {
        seen[i] = generate("mem:", ESTC_OBJ_KEY, NULL);
        ck_assert_uint_eq(strlen(seen[i]), strlen("mem:estc-key-") + 16);
        ck_assert_int_eq(strncmp(seen[i], "mem:estc-key-", 13), 0);
        for (const char *p = seen[i] + 13; *p != '\0'; p++)
            ck_assert_msg(isdigit((unsigned char)*p) || (*p >= 'a' && *p <= 'f'), "%s", seen[i]);
        for (int j = 0; j < i; j++)
            ck_assert_str_ne(seen[i], seen[j]);
    }
    for (int i = 0; i < 16; i++)
        free(seen[i]);
    /* A generated key address can be used at once. */
    char *addr = generate("mem:", ESTC_OBJ_KEY, NULL);
    ck_assert_int_eq(estc_key_generate(ctx, addr, ESTC_KEY_EC_P256), ESTC_OK);
    ck_assert(unit_exists(addr, ESTC_OBJ_KEY));
    free(addr);
}
END_TEST

/* A generator that records its calls and answers what it is told. */
static struct {
    int calls;
    void *arg;
    const void *der;
    size_t der_len;
    char answer[ESTC_ADDRESS_MAX + 8];
    bool answer_null;
} gen;

static const char *test_gen(void *arg, const void *der, size_t der_len)
{
    gen.calls++;
    gen.arg = arg;
    gen.der = der;
    gen.der_len = der_len;
    return gen.answer_null ? NULL : gen.answer;
}

START_TEST(custom_generator_used)
{
    estc_buf ca = {0};
    unit_make_cert("CA", &ca);
    int marker = 0;
    memset(&gen, 0, sizeof(gen));
    strcpy(gen.answer, "mem:custom-1");
    ck_assert_int_eq(estc_generator_set(ctx, "mem", test_gen, &marker), ESTC_OK);
    char *addr = generate("mem:prefix-", ESTC_OBJ_TRUST, &ca);
    ck_assert_str_eq(addr, "mem:custom-1");
    ck_assert_ptr_ne(addr, gen.answer); /* a copy, made at once */
    ck_assert_int_eq(gen.calls, 1);
    ck_assert_ptr_eq(gen.arg, &marker);
    ck_assert_ptr_eq(gen.der, ca.data);
    ck_assert_uint_eq(gen.der_len, ca.len);
    strcpy(gen.answer, "mem:changed");
    ck_assert_str_eq(addr, "mem:custom-1");
    free(addr);
    /* Keys too, with no DER. */
    addr = generate("mem:", ESTC_OBJ_KEY, NULL);
    ck_assert_str_eq(addr, "mem:changed");
    ck_assert_ptr_null(gen.der);
    ck_assert_uint_eq(gen.der_len, 0);
    free(addr);
    /* The scheme is compared without case. */
    strcpy(gen.answer, "MEM:upper");
    addr = generate("mem:", ESTC_OBJ_KEY, NULL);
    ck_assert_str_eq(addr, "MEM:upper");
    free(addr);
    /* Other schemes keep the default. */
    addr = generate("file:/d/", ESTC_OBJ_KEY, NULL);
    ck_assert_int_eq(strncmp(addr, "file:/d/estc-key-", 17), 0);
    free(addr);
    ck_assert_int_eq(gen.calls, 3);
    estc_buf_free(&ca);
}
END_TEST

START_TEST(custom_generator_refused_answers)
{
    memset(&gen, 0, sizeof(gen));
    ck_assert_int_eq(estc_generator_set(ctx, "mem", test_gen, NULL), ESTC_OK);
    char *keep = (char *)"keep";
    char *addr = keep;

    gen.answer_null = true;
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", ESTC_OBJ_KEY, NULL, 0, &addr),
                     ESTC_ERR_BAD_ADDRESS);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "address generator for \"mem:\" failed");
    ck_assert_ptr_eq(addr, keep);
    gen.answer_null = false;

    char huge[ESTC_ADDRESS_MAX + 8];
    memcpy(huge, "mem:", 4);
    memset(huge + 4, 'h', ESTC_ADDRESS_MAX - 3);
    huge[ESTC_ADDRESS_MAX + 1] = '\0';
    const char *bad[] = {"file:/elsewhere", "", "mem", "1mem:x", "mem:x\n", ":x", "memx:y", huge};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        snprintf(gen.answer, sizeof(gen.answer), "%s", bad[i]);
        ck_assert_msg(estc_address_generate(ctx, "mem:", ESTC_OBJ_TRUST, "d", 1, &addr) ==
                          ESTC_ERR_BAD_ADDRESS,
                      "answer %zu accepted", i);
        ck_assert_str_eq(estc_ctx_error_detail(ctx),
                         "address generator for \"mem:\" returned a bad or foreign address");
        ck_assert_ptr_eq(addr, keep);
    }
    ck_assert_int_eq(gen.calls, 1 + (int)UNIT_ARRAY_LEN(bad));

    /* The longest address is fine. */
    huge[ESTC_ADDRESS_MAX] = '\0';
    snprintf(gen.answer, sizeof(gen.answer), "%s", huge);
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", ESTC_OBJ_KEY, NULL, 0, &addr), ESTC_OK);
    ck_assert_uint_eq(strlen(addr), ESTC_ADDRESS_MAX);
    free(addr);
}
END_TEST

START_TEST(set_null_restores_default)
{
    estc_buf ca = {0};
    unit_make_cert("CA", &ca);
    char name[64], want[96];
    default_name("trust", &ca, name, sizeof(name));
    snprintf(want, sizeof(want), "mem:%s", name);
    memset(&gen, 0, sizeof(gen));
    strcpy(gen.answer, "mem:custom");
    ck_assert_int_eq(estc_generator_set(ctx, "mem", test_gen, NULL), ESTC_OK);
    char *addr = generate("mem:", ESTC_OBJ_TRUST, &ca);
    ck_assert_str_eq(addr, "mem:custom");
    free(addr);
    ck_assert_int_eq(estc_generator_set(ctx, "mem", NULL, &gen), ESTC_OK);
    addr = generate("mem:", ESTC_OBJ_TRUST, &ca);
    ck_assert_str_eq(addr, want);
    free(addr);
    ck_assert_int_eq(gen.calls, 1);
    /* And a generator can be set again afterwards. */
    ck_assert_int_eq(estc_generator_set(ctx, "mem", test_gen, NULL), ESTC_OK);
    addr = generate("mem:", ESTC_OBJ_TRUST, &ca);
    ck_assert_str_eq(addr, "mem:custom");
    free(addr);
    estc_buf_free(&ca);
}
END_TEST

START_TEST(generator_set_arguments)
{
    char s32[40];
    memset(s32, 's', 32);
    s32[32] = '\0';
    ck_assert_int_eq(estc_generator_set(NULL, "mem", test_gen, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_generator_set(ctx, NULL, test_gen, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_generator_set(ctx, "", test_gen, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_generator_set(ctx, s32, test_gen, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_generator_set(ctx, "nosuch", test_gen, NULL), ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "no engine for scheme \"nosuch:\"");
    ck_assert_int_eq(estc_generator_set(ctx, "file", NULL, NULL), ESTC_OK);
}
END_TEST

START_TEST(address_generate_arguments)
{
    char *addr = NULL;
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", (estc_obj_kind)0, NULL, 0, &addr),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", (estc_obj_kind)4, NULL, 0, &addr),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", ESTC_OBJ_TRUST, NULL, 5, &addr),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_generate(ctx, "mem:", ESTC_OBJ_KEY, NULL, 0, NULL),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_generate(ctx, NULL, ESTC_OBJ_KEY, NULL, 0, &addr),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_generate(NULL, "mem:", ESTC_OBJ_KEY, NULL, 0, &addr),
                     ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc_address_generate(ctx, "nosuch:", ESTC_OBJ_KEY, NULL, 0, &addr),
                     ESTC_ERR_UNKNOWN_SCHEME);
    ck_assert_int_eq(estc_address_generate(ctx, "bad", ESTC_OBJ_KEY, NULL, 0, &addr),
                     ESTC_ERR_BAD_ADDRESS);
    /* The driver's own refusal: file: needs a folder or a name prefix. */
    ck_assert_int_eq(estc_address_generate(ctx, "file:", ESTC_OBJ_KEY, NULL, 0, &addr),
                     ESTC_ERR_BAD_ADDRESS);
    ck_assert_str_eq(estc_ctx_error_detail(ctx), "\"file:\": file: prefix needs a folder");
    ck_assert_ptr_null(addr);
}
END_TEST

/* ---- regressions: each of these failed before its fix ------------------ */

/*
 * Regression (engines/generator.c estc_generator_set): @scheme is to be
 * given without ':', but "mem:" and even "mem:anything" are accepted and
 * install the generator for every mem: address (the text is only probed by
 * appending ':' and reading the scheme in front of the first ':'). A caller
 * who passes a prefix, thinking the generator is per prefix, silently
 * changes the whole engine.
 */
START_TEST(regression_generator_set_accepts_scheme_with_colon)
{
    memset(&gen, 0, sizeof(gen));
    strcpy(gen.answer, "mem:custom");
    const char *bad[] = {"mem:", "mem:dev1-"};
    for (size_t i = 0; i < UNIT_ARRAY_LEN(bad); i++) {
        estc_err err = estc_generator_set(ctx, bad[i], test_gen, NULL);
        ck_assert_msg(err == ESTC_ERR_INVALID_ARG || err == ESTC_ERR_UNKNOWN_SCHEME,
                      "estc_generator_set(\"%s\") gave %s", bad[i], estc_err_name(err));
    }
    char *addr = generate("mem:", ESTC_OBJ_KEY, NULL);
    ck_assert_int_eq(gen.calls, 0);
    free(addr);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("generator");
    TCase *tc = unit_tcase(s, "generators");
    tcase_add_test(tc, default_is_deterministic);
    tcase_add_test(tc, default_keys_are_random);
    tcase_add_test(tc, custom_generator_used);
    tcase_add_test(tc, custom_generator_refused_answers);
    tcase_add_test(tc, set_null_restores_default);
    tcase_add_test(tc, generator_set_arguments);
    tcase_add_test(tc, address_generate_arguments);
    tc = unit_tcase(s, "regressions");
    tcase_add_test(tc, regression_generator_set_accepts_scheme_with_colon);
    return unit_run(s);
}
