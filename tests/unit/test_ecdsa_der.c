/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of estc__ecdsa_raw_to_der() (engines/util.c, built into this
 * test as into the drivers): raw r||s of every size the drivers meet (P-256,
 * P-384, P-521) turned into the same DER as OpenSSL's i2d_ECDSA_SIG, for
 * random values and for the edges: leading zero bytes, the high bit set
 * (a zero byte before it), r or s zero, a SEQUENCE longer than 127 bytes;
 * and the arguments it refuses.
 */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/rand.h>

#include "unit_util.h"
#include "util.h"

/* What OpenSSL makes of the same r||s. */
static void expect_like_openssl(const uint8_t *rs, size_t len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(rs, (int)(len / 2), NULL);
    BIGNUM *s = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
    ck_assert_ptr_nonnull(sig);
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(ECDSA_SIG_set0(sig, r, s), 1);
    unsigned char *want = NULL;
    int want_len = i2d_ECDSA_SIG(sig, &want);
    ECDSA_SIG_free(sig);
    ck_assert_int_gt(want_len, 0);

    estc_buf der = {0};
    ck_assert_int_eq(estc__ecdsa_raw_to_der(rs, len, &der), ESTC_OK);
    ck_assert_uint_eq(der.len, (size_t)want_len);
    ck_assert_mem_eq(der.data, want, der.len);
    estc_buf_free(&der);
    OPENSSL_free(want);
}

static const size_t sizes[] = {64, 96, 132};

START_TEST(random_values)
{
    uint8_t rs[132];
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        for (int i = 0; i < 500; i++) {
            ck_assert_int_eq(RAND_bytes(rs, (int)sizes[k]), 1);
            expect_like_openssl(rs, sizes[k]);
        }
    }
}
END_TEST

START_TEST(edges)
{
    uint8_t rs[132];
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t len = sizes[k], half = len / 2;
        /* Every combination of: zero, one leading zero byte, several, the
         * high bit set, 0x00 0x80 (a leading zero that must go, then a pad
         * that must come back), all 0xff. */
        for (int a = 0; a < 6; a++) {
            for (int b = 0; b < 6; b++) {
                for (int h = 0; h < 2; h++) {
                    int form = h == 0 ? a : b;
                    uint8_t *v = rs + h * half;
                    memset(v, 0x11, half);
                    switch (form) {
                    case 0:
                        memset(v, 0, half);
                        break;
                    case 1:
                        v[0] = 0;
                        break;
                    case 2:
                        memset(v, 0, half - 1);
                        break;
                    case 3:
                        v[0] = 0x80;
                        break;
                    case 4:
                        v[0] = 0;
                        v[1] = 0x80;
                        break;
                    case 5:
                        memset(v, 0xff, half);
                        break;
                    }
                }
                expect_like_openssl(rs, len);
            }
        }
    }
}
END_TEST

START_TEST(refused)
{
    uint8_t rs[134] = {1};
    estc_buf der = {0};
    ck_assert_int_eq(estc__ecdsa_raw_to_der(NULL, 64, &der), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__ecdsa_raw_to_der(rs, 64, NULL), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__ecdsa_raw_to_der(rs, 0, &der), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__ecdsa_raw_to_der(rs, 63, &der), ESTC_ERR_INVALID_ARG);
    ck_assert_int_eq(estc__ecdsa_raw_to_der(rs, 134, &der), ESTC_ERR_INVALID_ARG);
    ck_assert_ptr_null(der.data);
    ck_assert_uint_eq(der.len, 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ecdsa-der");
    TCase *tc = unit_tcase(s, "estc__ecdsa_raw_to_der");
    tcase_add_test(tc, random_values);
    tcase_add_test(tc, edges);
    tcase_add_test(tc, refused);
    return unit_run(s);
}
