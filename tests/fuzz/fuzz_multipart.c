/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: multipart-core CBOR (CF 62). */
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    estc__multipart out;
    if (estc__codec_multipart(data, size, &out) == ESTC_OK) {
        /* What parses must encode back to the same bytes or fewer (the
         * decoder accepts non-minimal heads, the encoder writes minimal). */
        estc_buf enc = {NULL, 0};
        if (estc__multipart_encode(out.parts, out.n, &enc) == ESTC_OK && enc.len > size)
            __builtin_trap();
        estc_buf_free(&enc);
    }
    estc__multipart_free(&out);
    return 0;
}
