/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The provider as a loadable module ("-provider estc"): it creates its own
 * estc_ctx with the built-in drivers, so addresses like
 * "pkcs11:token=T;object=K;pin-value=1234" work in any OpenSSL program.
 */
#include <openssl/core.h>

#include "internal.h"

__attribute__((visibility("default"))) int OSSL_provider_init(const OSSL_CORE_HANDLE *handle,
                                                              const OSSL_DISPATCH *in,
                                                              const OSSL_DISPATCH **out,
                                                              void **provctx);

int OSSL_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                       const OSSL_DISPATCH **out, void **provctx)
{
    estc_ctx *ectx = NULL;

    if (estc_ctx_new(&ectx) != ESTC_OK)
        return 0;
    return estc__provider_init(handle, in, out, provctx, ectx, true);
}
