/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The drivers built into the library, registered in every new context.
 */
#include "engines_config.h"
#include "internal.h"

extern const struct estc_driver estc__driver_mem;
extern const struct estc_driver estc__driver_file;
#if ESTC_HAVE_PKCS11
extern const struct estc_driver estc__driver_pkcs11;
#endif
#if ESTC_HAVE_TPM2
extern const struct estc_driver estc__driver_tpm2;
#endif
#if ESTC_HAVE_PSA
extern const struct estc_driver estc__driver_psa;
#endif

static const struct estc_driver *const builtin[] = {
    &estc__driver_mem,    &estc__driver_file,
#if ESTC_HAVE_PKCS11
    &estc__driver_pkcs11,
#endif
#if ESTC_HAVE_TPM2
    &estc__driver_tpm2,
#endif
#if ESTC_HAVE_PSA
    &estc__driver_psa,
#endif
};

estc_err estc__register_builtin(estc_ctx *ctx)
{
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
        estc_err err = estc_engine_register(ctx, builtin[i]);
        if (err != ESTC_OK)
            return err;
    }
    return ESTC_OK;
}
