/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the built-in drivers (not public API): the conversions
 * every hardware engine needs between its native formats and the DER that
 * the driver API speaks, and the one reader of files that hold secrets.
 */
#ifndef ESTC_ENGINES_UTIL_H
#define ESTC_ENGINES_UTIL_H

#include <estc/engine.h>

/* Length in bytes of a digest of @hash, 0 for an unknown value. */
size_t estc__hash_len(estc_hash hash);

/* OpenSSL digest name of @hash ("SHA256"), NULL for an unknown value. */
const char *estc__hash_name(estc_hash hash);

/* Curve size in bytes (32 for P-256, 48 for P-384), 0 for non-EC types. */
size_t estc__ec_field_len(estc_key_type type);

/*
 * Raw ECDSA signature r||s (as PKCS#11, PSA and TPM give it; @len even) into
 * a DER ECDSA-Sig-Value. ESTC_ERR_INVALID_ARG / ESTC_ERR_CRYPTO / NOMEM.
 */
estc_err estc__ecdsa_raw_to_der(const uint8_t *rs, size_t len, estc_buf *der);

/*
 * SubjectPublicKeyInfo DER of an EC key of @type from its uncompressed point
 * (0x04 || X || Y). ESTC_ERR_FORMAT for a point not on the curve.
 */
estc_err estc__spki_from_ec_point(estc_key_type type, const uint8_t *point, size_t len,
                                  estc_buf *spki);

/* SubjectPublicKeyInfo DER of an RSA key from big-endian modulus and exponent. */
estc_err estc__spki_from_rsa(const uint8_t *n, size_t n_len, const uint8_t *e, size_t e_len,
                             estc_buf *spki);

/*
 * DER DigestInfo of @digest for RSASSA-PKCS1-v1_5 (for engines whose RSA
 * mechanism signs a prepared DigestInfo, like CKM_RSA_PKCS).
 */
estc_err estc__digest_info(estc_hash hash, const uint8_t *digest, size_t len, estc_buf *out);

/* The one mapping of OpenSSL keys to key types: EC P-256/P-384 (by either
 * curve name), RSA 2048/3072. ESTC_ERR_FORMAT for an EC key without a named
 * curve, ESTC_ERR_UNSUPPORTED for anything else. */
struct evp_pkey_st;
estc_err estc__pkey_key_type(const struct evp_pkey_st *pkey, estc_key_type *type);

/* Key type of a SubjectPublicKeyInfo (EC P-256/P-384, RSA 2048/3072). */
estc_err estc__spki_key_type(const uint8_t *spki, size_t len, estc_key_type *type);

/* Lower-case hex of the SHA-256 of @data, first @hex_len digits (<= 64) into
 * @out (hex_len + 1 bytes). */
estc_err estc__sha256_hex(const void *data, size_t len, char *out, size_t hex_len);

/*
 * One whole DER PKCS#8 PrivateKeyInfo as a key of OpenSSL's default
 * provider, with an EC public key computed where the encoding left it out
 * (RFC 5915 makes it optional). ESTC_ERR_FORMAT for anything else.
 */
struct evp_pkey_st;
estc_err estc__pkcs8_decode(const uint8_t *der, size_t len, struct evp_pkey_st **out);

/* The value of hex digit @c, -1 for any other character. */
int estc__hex_digit(char c);

/* The code of a failed system call on a file: ESTC_ERR_NOT_FOUND (ENOENT),
 * ESTC_ERR_EXISTS, ESTC_ERR_AUTH (EACCES, EPERM), ESTC_ERR_NOMEM, else
 * ESTC_ERR_IO. */
estc_err estc__errno_err(int e);

/* The path that @source names: a plain path, or a file: URI ("file:/x" and
 * "file:///x" both name /x). A pointer into @source. */
const char *estc__file_uri_path(const char *source);

/* What estc__read_secret_file() accepts. Every file is opened without
 * following a symbolic link (O_NOFOLLOW) and without blocking (O_NONBLOCK),
 * and checked on the open descriptor (fstat): it must be a regular file
 * owned by the effective user or root, of at most the given size. */
enum estc__file_policy {
    /*
     * A secret (PIN, password): no permission bit for others (mode & 0007 is
     * 0) and not writable by its group (mode & 0020 is 0), so 0600, 0400,
     * 0640 and 0440 are taken and 0644, 0604, 0620, 0601 are not. One
     * trailing newline ("\n" or "\r\n") is dropped. Every refusal is
     * ESTC_ERR_AUTH: the credential cannot be had.
     */
    ESTC__FILE_SECRET,
    /*
     * A file others may read but must not change (a key blob that only the
     * TPM can use): not writable by group or others (mode & 0022 is 0).
     * Read as it is. A missing file is ESTC_ERR_NOT_FOUND, a mode, an owner
     * or a symbolic link refused ESTC_ERR_AUTH, not a regular file or too large
     * ESTC_ERR_FORMAT, a failed read ESTC_ERR_IO.
     */
    ESTC__FILE_UNWRITABLE,
};

/*
 * Reads the file at @path under @policy into @out (malloc()ed, NUL after
 * the last byte; free with estc_buf_free(), which wipes it): at most @max
 * bytes, after a dropped newline. Errors name the file as "@shown: @what
 * @path" and the rule it breaks, never its content; what was read is wiped
 * on every error path. ESTC_ERR_INVALID_ARG for NULL arguments, NOMEM.
 */
estc_err estc__read_secret_file(estc_ctx *ctx, const char *shown, const char *what,
                                const char *path, enum estc__file_policy policy, size_t max,
                                estc_buf *out);

#endif
