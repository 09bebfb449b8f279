/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PSA Internal Trusted Storage API (PSA Certified Secure Storage API
 * 1.0), as libmbedcrypto implements and exports it.
 *
 * mbed TLS 2.28 exports psa_its_set/get/get_info/remove (its file backend,
 * MBEDTLS_PSA_ITS_FILE_C) but installs no header for them, so the standard
 * declarations are repeated here. Where the platform ships
 * <psa/internal_trusted_storage.h> (TF-M, other PSA implementations), that
 * header is used instead.
 */
#ifndef ESTC_PSA_ITS_H
#define ESTC_PSA_ITS_H

#include <stddef.h>
#include <stdint.h>

#include <psa/crypto.h>

#if ESTC_PSA_HAVE_ITS_HEADER
#include <psa/internal_trusted_storage.h>
#else

typedef uint32_t psa_storage_create_flags_t;
typedef uint64_t psa_storage_uid_t;

#define PSA_STORAGE_FLAG_NONE 0

struct psa_storage_info_t {
    uint32_t size;
    psa_storage_create_flags_t flags;
};

psa_status_t psa_its_set(psa_storage_uid_t uid, uint32_t data_length, const void *p_data,
                         psa_storage_create_flags_t create_flags);
psa_status_t psa_its_get(psa_storage_uid_t uid, uint32_t data_offset, uint32_t data_length,
                         void *p_data, size_t *p_data_length);
psa_status_t psa_its_get_info(psa_storage_uid_t uid, struct psa_storage_info_t *p_info);
psa_status_t psa_its_remove(psa_storage_uid_t uid);

#endif
#endif
