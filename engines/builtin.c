/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The drivers registered in every new context: mem: and file: built into
 * the library, and the optional drivers (pkcs11:, tpm2:, psa:), which are
 * plug-ins loaded on the first use of their scheme (registry.c): until then
 * their scheme is held by a placeholder that has no operations.
 */
#include "engines_config.h"
#include "internal.h"

extern const struct estc_driver estc__driver_mem;
extern const struct estc_driver estc__driver_file;

static const struct estc_driver *const builtin[] = {
    &estc__driver_mem,
    &estc__driver_file,
};

#define PLUGIN(name) {.api_version = ESTC_DRIVER_API_VERSION, .scheme = name}

static const struct estc_driver plugins[] = {
#if ESTC_HAVE_PKCS11
    PLUGIN("pkcs11"),
#endif
#if ESTC_HAVE_TPM2
    PLUGIN("tpm2"),
#endif
#if ESTC_HAVE_PSA
    PLUGIN("psa"),
#endif
    {0},
};

estc_err estc__register_builtin(estc_ctx *ctx)
{
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++) {
        estc_err err = estc_engine_register(ctx, builtin[i]);
        if (err != ESTC_OK)
            return err;
    }
    for (size_t i = 0; plugins[i].scheme != NULL; i++) {
        estc_err err = estc__register_plugin(ctx, &plugins[i]);
        if (err != ESTC_OK)
            return err;
    }
    return ESTC_OK;
}

const char *estc__plugin_dir(void)
{
    return ESTC_ENGINE_DIR;
}
