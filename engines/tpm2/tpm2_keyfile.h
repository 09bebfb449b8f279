/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The codec of TSS2 PRIVATE KEY files (keyfile.c): no TPM and no library
 * context, so that the fuzz build can take it alone.
 */
#ifndef ESTC_TPM2_KEYFILE_H
#define ESTC_TPM2_KEYFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tss2/tss2_tpm2_types.h>

/* A loadable key: the TPM-wrapped blob and where it belongs. */
struct tpm2_keyfile {
    uint32_t parent; /* TPM2_RH_OWNER (a primary from the standard template) or 0x81...... */
    bool empty_auth; /* the key has no password */
    TPM2B_PUBLIC pub;
    TPM2B_PRIVATE priv;
};

/* Whether @parent is one this driver can load under. */
bool estc__tpm2_keyfile_parent_ok(uint32_t parent);

/* Reads a PEM ("TSS2 PRIVATE KEY") or DER file of @len bytes into @kf.
 * NULL on success, else a static text saying what is wrong (and @kf zero). */
const char *estc__tpm2_keyfile_parse(const uint8_t *data, size_t len, struct tpm2_keyfile *kf);

/* The PEM text of @kf, in *@pem (free with OPENSSL_free). NULL on success,
 * else a static reason. */
const char *estc__tpm2_keyfile_encode(const struct tpm2_keyfile *kf, char **pem, size_t *pem_len);

#endif
