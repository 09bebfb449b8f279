/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: CSR attributes (CF 285) and the CSR hints. */
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    estc__csrattrs out;
    if (estc__codec_csrattrs(data, size, &out) == ESTC_OK) {
        estc__csr_hints hints;
        if (estc__csrattrs_hints(&out, &hints) == ESTC_OK)
            estc__csr_hints_free(&hints);
    }
    estc__csrattrs_free(&out);
    return 0;
}
