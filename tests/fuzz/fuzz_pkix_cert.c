/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: one DER certificate (CF 287). */
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    estc__der_list out;
    if (estc__codec_pkix_cert(data, size, &out) == ESTC_OK && out.n != 1)
        __builtin_trap();
    estc__der_list_free(&out);
    return 0;
}
