/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: CoRE link-format discovery (CF 40). */
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    estc__discovery out;
    if (estc__codec_link_format((const char *)data, size, &out) == ESTC_OK) {
        for (int r = 0; r < ESTC__EST_COUNT; r++)
            if (out.res[r].found && out.res[r].path == NULL)
                __builtin_trap();
    }
    estc__discovery_free(&out);
    return 0;
}
