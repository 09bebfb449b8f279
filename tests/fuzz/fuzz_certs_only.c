/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: certs-only PKCS#7 (CF 281). */
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    estc__der_list out;
    if (estc__codec_certs_only(data, size, &out) == ESTC_OK && out.n == 0)
        __builtin_trap(); /* success always yields a certificate */
    estc__der_list_free(&out);
    return 0;
}
