/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Format conversions shared by the built-in drivers, and the one reader of
 * files that hold secrets.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#include "util.h"

size_t estc__hash_len(estc_hash hash)
{
    switch (hash) {
    case ESTC_HASH_SHA256:
        return 32;
    case ESTC_HASH_SHA384:
        return 48;
    case ESTC_HASH_SHA512:
        return 64;
    }
    return 0;
}

const char *estc__hash_name(estc_hash hash)
{
    switch (hash) {
    case ESTC_HASH_SHA256:
        return "SHA256";
    case ESTC_HASH_SHA384:
        return "SHA384";
    case ESTC_HASH_SHA512:
        return "SHA512";
    }
    return NULL;
}

size_t estc__ec_field_len(estc_key_type type)
{
    switch (type) {
    case ESTC_KEY_EC_P256:
        return 32;
    case ESTC_KEY_EC_P384:
        return 48;
    default:
        return 0;
    }
}

/* Takes a malloc()ed copy of what i2d wrote, so callers own plain heap bytes. */
static estc_err take_der(unsigned char *der, int len, estc_buf *out)
{
    if (der == NULL || len <= 0)
        return ESTC_ERR_CRYPTO;
    estc_err err = estc_buf_set(out, der, (size_t)len);
    OPENSSL_free(der);
    return err;
}

/* One half of r||s as the content of a DER INTEGER: leading zero bytes
 * dropped (one kept for zero), a zero byte put before a set high bit.
 * Writes at most @len + 1 bytes to @out; returns how many. */
static size_t der_uint(const uint8_t *v, size_t len, uint8_t *out)
{
    while (len > 1 && v[0] == 0) {
        v++;
        len--;
    }
    size_t o = 0;
    if ((v[0] & 0x80) != 0)
        out[o++] = 0;
    memcpy(out + o, v, len);
    return o + len;
}

/* Written here rather than with ECDSA_SIG and two BIGNUMs: this runs for
 * every signature a token, TPM or PSA key makes, and the OpenSSL path costs
 * about 9000 instructions per call against a few hundred. */
estc_err estc__ecdsa_raw_to_der(const uint8_t *rs, size_t len, estc_buf *der)
{
    if (rs == NULL || der == NULL || len == 0 || len % 2 != 0 || len > 132)
        return ESTC_ERR_INVALID_ARG;
    size_t half = len / 2;
    /* Each INTEGER at most 67 content bytes (short length form); the
     * SEQUENCE's content at most 138 (0x81 form above 127). */
    uint8_t r[67], s[67];
    size_t rl = der_uint(rs, half, r);
    size_t sl = der_uint(rs + half, half, s);
    size_t body = 2 + rl + 2 + sl;
    size_t total = (body > 127 ? 3 : 2) + body;
    uint8_t *out = malloc(total);
    if (out == NULL)
        return ESTC_ERR_NOMEM;
    size_t o = 0;
    out[o++] = 0x30;
    if (body > 127)
        out[o++] = 0x81;
    out[o++] = (uint8_t)body;
    out[o++] = 0x02;
    out[o++] = (uint8_t)rl;
    memcpy(out + o, r, rl);
    o += rl;
    out[o++] = 0x02;
    out[o++] = (uint8_t)sl;
    memcpy(out + o, s, sl);
    estc_buf_free(der);
    der->data = out;
    der->len = total;
    return ESTC_OK;
}

static estc_err spki_from_params(const char *alg, OSSL_PARAM *params, estc_buf *spki)
{
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, alg, NULL);
    EVP_PKEY *pkey = NULL;
    estc_err err = ESTC_ERR_FORMAT;
    if (pctx != NULL && EVP_PKEY_fromdata_init(pctx) == 1 &&
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1) {
        unsigned char *der = NULL;
        int n = i2d_PUBKEY(pkey, &der);
        err = take_der(der, n, spki);
    }
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(pctx);
    return err;
}

estc_err estc__spki_from_ec_point(estc_key_type type, const uint8_t *point, size_t len,
                                  estc_buf *spki)
{
    size_t field = estc__ec_field_len(type);
    if (point == NULL || spki == NULL || field == 0)
        return ESTC_ERR_INVALID_ARG;
    if (len != 1 + 2 * field || point[0] != 0x04)
        return ESTC_ERR_FORMAT;
    char group[16];
    snprintf(group, sizeof(group), "%s", type == ESTC_KEY_EC_P256 ? "P-256" : "P-384");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point, len),
        OSSL_PARAM_construct_end(),
    };
    /* fromdata checks that the point lies on the curve. */
    return spki_from_params("EC", params, spki);
}

estc_err estc__spki_from_rsa(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len,
                             estc_buf *spki)
{
    if (n == NULL || e == NULL || spki == NULL || n_len == 0 || e_len == 0)
        return ESTC_ERR_INVALID_ARG;
    estc_err err = ESTC_ERR_NOMEM;
    BIGNUM *bn_n = BN_bin2bn(n, (int)n_len, NULL);
    BIGNUM *bn_e = BN_bin2bn(e, (int)e_len, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    if (bn_n != NULL && bn_e != NULL && bld != NULL &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) == 1 &&
        (params = OSSL_PARAM_BLD_to_param(bld)) != NULL)
        err = spki_from_params("RSA", params, spki);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return err;
}

/* DER DigestInfo headers (RFC 8017 §9.2, note 1); the digest follows. */
static const uint8_t di_sha256[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
static const uint8_t di_sha384[] = {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30};
static const uint8_t di_sha512[] = {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                    0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40};

estc_err estc__digest_info(estc_hash hash, const uint8_t *digest, size_t len, estc_buf *out)
{
    const uint8_t *head = hash == ESTC_HASH_SHA256   ? di_sha256
                          : hash == ESTC_HASH_SHA384 ? di_sha384
                          : hash == ESTC_HASH_SHA512 ? di_sha512
                                                     : NULL;
    if (head == NULL || digest == NULL || out == NULL || len != estc__hash_len(hash))
        return ESTC_ERR_INVALID_ARG;
    uint8_t buf[sizeof(di_sha512) + 64];
    memcpy(buf, head, sizeof(di_sha256));
    memcpy(buf + sizeof(di_sha256), digest, len);
    return estc_buf_set(out, buf, sizeof(di_sha256) + len);
}

estc_err estc__pkey_key_type(const struct evp_pkey_st *pkey, estc_key_type *type)
{
    if (pkey == NULL || type == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64] = "";
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           NULL) != 1)
            return ESTC_ERR_FORMAT;
        /* OpenSSL reports SEC names for keys it decoded, NIST names for some
         * it generated: accept both. */
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            *type = ESTC_KEY_EC_P256;
        else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
            *type = ESTC_KEY_EC_P384;
        else
            return ESTC_ERR_UNSUPPORTED;
        return ESTC_OK;
    }
    int bits = EVP_PKEY_get_bits(pkey);
    if (EVP_PKEY_is_a(pkey, "RSA") && (bits == 2048 || bits == 3072)) {
        *type = bits == 2048 ? ESTC_KEY_RSA_2048 : ESTC_KEY_RSA_3072;
        return ESTC_OK;
    }
    return ESTC_ERR_UNSUPPORTED;
}

estc_err estc__spki_key_type(const uint8_t *spki, size_t len, estc_key_type *type)
{
    if (spki == NULL || type == NULL || len == 0)
        return ESTC_ERR_INVALID_ARG;
    const unsigned char *p = spki;
    EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)len);
    estc_err err = ESTC_ERR_FORMAT;
    if (pkey != NULL && p == spki + len)
        err = estc__pkey_key_type(pkey, type);
    EVP_PKEY_free(pkey);
    return err;
}

estc_err estc__sha256_hex(const void *data, size_t len, char *out, size_t hex_len)
{
    unsigned char md[32];
    if ((data == NULL && len > 0) || out == NULL || hex_len > 64)
        return ESTC_ERR_INVALID_ARG;
    if (EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL) != 1)
        return ESTC_ERR_CRYPTO;
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < hex_len; i++)
        out[i] = digits[(md[i / 2] >> (i % 2 == 0 ? 4 : 0)) & 0xf];
    out[hex_len] = '\0';
    return ESTC_OK;
}

static estc_err ec_complete_public(EVP_PKEY **pkey)
{
    if (pkey == NULL || *pkey == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (!EVP_PKEY_is_a(*pkey, "EC"))
        return ESTC_OK;
    size_t have = 0;
    if (EVP_PKEY_get_octet_string_param(*pkey, OSSL_PKEY_PARAM_PUB_KEY, NULL, 0, &have) == 1 &&
        have > 0)
        return ESTC_OK;
    ERR_clear_error();
    /* RFC 5915 makes the public key optional in a private key: compute it,
     * Q = d·G, for the engines that need both halves. */
    char group[32] = "";
    BIGNUM *d = NULL;
    EC_GROUP *g = NULL;
    EC_POINT *q = NULL;
    BN_CTX *bn = BN_CTX_new();
    uint8_t point[1 + 2 * 66];
    size_t plen = 0;
    estc_err err = ESTC_ERR_FORMAT;
    EVP_PKEY *full = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    if (bn == NULL ||
        EVP_PKEY_get_utf8_string_param(*pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       NULL) != 1 ||
        EVP_PKEY_get_bn_param(*pkey, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1)
        goto done;
    g = EC_GROUP_new_by_curve_name(OBJ_txt2nid(group));
    q = g != NULL ? EC_POINT_new(g) : NULL;
    if (q == NULL || EC_POINT_mul(g, q, d, NULL, NULL, bn) != 1 ||
        (plen = EC_POINT_point2oct(g, q, POINT_CONVERSION_UNCOMPRESSED, point, sizeof(point),
                                   bn)) == 0)
        goto done;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    if (bld != NULL &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, plen) == 1)
        params = OSSL_PARAM_BLD_to_param(bld);
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (params != NULL && pctx != NULL && EVP_PKEY_fromdata_init(pctx) == 1 &&
        EVP_PKEY_fromdata(pctx, &full, EVP_PKEY_KEYPAIR, params) == 1) {
        EVP_PKEY_free(*pkey);
        *pkey = full;
        err = ESTC_OK;
    }
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
done:
    OPENSSL_cleanse(point, sizeof(point));
    EVP_PKEY_CTX_free(pctx);
    EC_POINT_free(q);
    EC_GROUP_free(g);
    BN_clear_free(d);
    BN_CTX_free(bn);
    return err;
}

estc_err estc__pkcs8_decode(const uint8_t *der, size_t len, EVP_PKEY **out)
{
    if (der == NULL || len == 0 || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    /* First the strict shape: one whole PrivateKeyInfo, nothing after it. */
    const unsigned char *p = der;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
    bool whole = p8 != NULL && p == der + len;
    PKCS8_PRIV_KEY_INFO_free(p8);
    /* Then the default provider's decoders: in a process where the estc
     * provider is loaded, its key management (public parts only) must not
     * take the key, nor may OpenSSL fall back to a legacy key. */
    EVP_PKEY *key = NULL;
    OSSL_DECODER_CTX *dctx =
        whole ? OSSL_DECODER_CTX_new_for_pkey(&key, "DER", NULL, NULL, EVP_PKEY_KEYPAIR, NULL,
                                              "provider=default")
              : NULL;
    const unsigned char *in = der;
    size_t left = len;
    if (dctx == NULL || OSSL_DECODER_from_data(dctx, &in, &left) != 1 || left != 0) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    OSSL_DECODER_CTX_free(dctx);
    if (key == NULL) {
        ERR_clear_error();
        return ESTC_ERR_FORMAT;
    }
    estc_err err = ec_complete_public(&key);
    if (err != ESTC_OK) {
        EVP_PKEY_free(key);
        return err;
    }
    *out = key;
    return ESTC_OK;
}

int estc__hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

estc_err estc__errno_err(int e)
{
    return e == ENOENT                   ? ESTC_ERR_NOT_FOUND
           : e == EEXIST                 ? ESTC_ERR_EXISTS
           : (e == EACCES || e == EPERM) ? ESTC_ERR_AUTH
           : e == ENOMEM                 ? ESTC_ERR_NOMEM
                                         : ESTC_ERR_IO;
}

const char *estc__file_uri_path(const char *source)
{
    const char *path = source;
    if (path != NULL && strncmp(path, "file:", 5) == 0) {
        path += 5;
        if (strncmp(path, "//", 2) == 0)
            path += 2;
    }
    return path;
}

/* What a file is, for a refusal: "a FIFO", "a folder", ... */
static const char *file_kind(mode_t mode)
{
    return S_ISFIFO(mode)                   ? "a FIFO"
           : S_ISDIR(mode)                  ? "a folder"
           : S_ISCHR(mode) || S_ISBLK(mode) ? "a device"
           : S_ISSOCK(mode)                 ? "a socket"
                                            : "of another kind";
}

estc_err estc__read_secret_file(estc_ctx *ctx, const char *shown, const char *what,
                                const char *path, enum estc__file_policy policy, size_t max,
                                estc_buf *out)
{
    if (shown == NULL || what == NULL || path == NULL || out == NULL ||
        (policy != ESTC__FILE_SECRET && policy != ESTC__FILE_UNWRITABLE) || max > SIZE_MAX / 2)
        return ESTC_ERR_INVALID_ARG;
    bool secret = policy == ESTC__FILE_SECRET;
    /* A secret that cannot be had is an authentication failure, whatever
     * the reason; a key blob keeps the kind of failure. */
    estc_err refused = ESTC_ERR_AUTH;
    estc_err bad_file = secret ? ESTC_ERR_AUTH : ESTC_ERR_FORMAT;
    /* O_NONBLOCK: a FIFO must be refused, not waited on for a writer. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        struct stat lst;
        if (e == ELOOP && lstat(path, &lst) == 0 && S_ISLNK(lst.st_mode))
            return estc_error(ctx, refused,
                              "%s: %s %s is a symbolic link, not a regular file; refused", shown,
                              what, path);
        estc_err err = secret && e != ENOMEM ? ESTC_ERR_AUTH : estc__errno_err(e);
        return estc_error(ctx, err, "%s: cannot read %s %s: %s", shown, what, path, strerror(e));
    }
    struct stat st;
    estc_err err = ESTC_OK;
    /* Room for the longest content taken, its newline, and one byte more
     * to tell a file that is too long. */
    size_t cap = max + (secret ? 2 : 0) + 1;
    uint8_t *buf = NULL;
    size_t n = 0;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        err = estc_error(ctx, secret ? ESTC_ERR_AUTH : estc__errno_err(e),
                         "%s: cannot read %s %s: %s", shown, what, path, strerror(e));
    } else if (!S_ISREG(st.st_mode)) {
        err = estc_error(ctx, bad_file, "%s: %s %s is not a regular file (%s); refused", shown,
                         what, path, file_kind(st.st_mode));
    } else if (st.st_uid != geteuid() && st.st_uid != 0) {
        /* Its owner can change it whatever its mode says. */
        err = estc_error(ctx, refused, "%s: %s %s belongs to another user (uid %u); refused", shown,
                         what, path, (unsigned)st.st_uid);
    } else if (secret && (st.st_mode & S_IRWXO) != 0) {
        err = estc_error(ctx, refused,
                         "%s: %s %s is open to others (mode %04o); refused: make it 0600 or 0640",
                         shown, what, path, (unsigned)(st.st_mode & 07777));
    } else if (secret && (st.st_mode & S_IWGRP) != 0) {
        err = estc_error(ctx, refused,
                         "%s: %s %s is writable by its group (mode %04o); refused: make it 0600 "
                         "or 0640",
                         shown, what, path, (unsigned)(st.st_mode & 07777));
    } else if (!secret && (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        err = estc_error(ctx, refused,
                         "%s: %s %s is writable by group or others (mode %04o); refused", shown,
                         what, path, (unsigned)(st.st_mode & 07777));
    } else if (st.st_size < 0 || (uintmax_t)st.st_size >= cap) {
        err = estc_error(ctx, bad_file, "%s: %s %s is too long (at most %zu bytes)", shown, what,
                         path, max);
    } else if ((buf = malloc(cap)) == NULL) {
        err = ESTC_ERR_NOMEM;
    }
    while (err == ESTC_OK && n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            err = estc_error(ctx, secret ? ESTC_ERR_AUTH : estc__errno_err(e),
                             "%s: cannot read %s %s: %s", shown, what, path, strerror(e));
        }
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (err == ESTC_OK && secret && n > 0 && n < cap && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    /* n == cap: the file grew after fstat() beyond what is taken. */
    if (err == ESTC_OK && n > max)
        err = estc_error(ctx, bad_file, "%s: %s %s is too long (at most %zu bytes)", shown, what,
                         path, max);
    if (err != ESTC_OK) {
        if (buf != NULL)
            OPENSSL_cleanse(buf, cap);
        free(buf);
        return err;
    }
    /* The dropped newline too: nothing past the content but zeros. */
    memset(buf + n, 0, cap - n);
    estc_buf_free(out);
    out->data = buf;
    out->len = n;
    return ESTC_OK;
}
