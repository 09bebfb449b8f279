/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer harness: the state reader (the frame, the digest and every
 * record of a state file), then the lifecycle record it carries, as
 * estc_client_restore() reads them. The digest is not keyed: anyone who
 * can write the file can make it match, so the decoder must hold against
 * any bytes. ESTC_FUZZ_FIX_DIGEST (the default) recomputes the SHA-256 of
 * the input before decoding, so that mutations reach the records. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include <estc/engine.h>

#include "persist_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void decode(const uint8_t *data, size_t size)
{
    static estc_ctx *ctx;
    if (ctx == NULL && estc_ctx_new(&ctx) != ESTC_OK)
        abort();
    struct estc__state st = {0};
    estc_err err = estc__state_decode(data, size, &st);
    if (err == ESTC_OK) {
        /* What every decoded state has. */
        if (st.key_addr == NULL || st.cert_addr == NULL || st.lifecycle.len == 0)
            __builtin_trap();
        estc_lifecycle *lc = NULL;
        if (estc_lifecycle_new(ctx, &lc) != ESTC_OK)
            abort();
        if (estc_lifecycle_deserialize(lc, st.lifecycle.data, st.lifecycle.len) == ESTC_OK) {
            /* A record that parses serializes again and parses the same. */
            estc_buf text = {0};
            estc_lifecycle *again = NULL;
            if (estc_lifecycle_serialize(lc, &text) != ESTC_OK ||
                estc_lifecycle_new(ctx, &again) != ESTC_OK ||
                estc_lifecycle_deserialize(again, text.data, text.len) != ESTC_OK ||
                estc_lifecycle_count(again) != estc_lifecycle_count(lc))
                __builtin_trap();
            estc_lifecycle_free(again);
            estc_buf_free(&text);
        }
        estc_lifecycle_free(lc);
    } else if (err != ESTC_ERR_FORMAT && err != ESTC_ERR_NOMEM) {
        __builtin_trap(); /* bad bytes are ESTC_ERR_FORMAT, nothing else */
    }
    estc__state_free(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    decode(data, size);
    /* The same bytes with a matching digest, so that the records are read. */
    if (size >= 16 + 32 && size <= ESTC__STATE_FILE_MAX) {
        uint8_t *copy = malloc(size);
        if (copy == NULL)
            return 0;
        memcpy(copy, data, size);
        unsigned n = 0;
        if (EVP_Digest(copy, size - 32, copy + size - 32, &n, EVP_sha256(), NULL) == 1)
            decode(copy, size);
        free(copy);
    }
    return 0;
}
