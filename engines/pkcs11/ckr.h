/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Names of PKCS#11 return values, for error details ("CKR_PIN_INCORRECT").
 */
#ifndef ESTC_ENGINES_PKCS11_CKR_H
#define ESTC_ENGINES_PKCS11_CKR_H

#include <p11-kit/pkcs11.h>

/* The CKR_ name of @rv, or NULL for a value without a known name. */
const char *estc__ckr_name(CK_RV rv);

#endif
