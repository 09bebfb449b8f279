/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The library context and byte buffers.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "internal.h"

void estc_buf_free(estc_buf *buf)
{
    if (buf == NULL)
        return;
    if (buf->data != NULL)
        OPENSSL_cleanse(buf->data, buf->len);
    free(buf->data);
    buf->data = NULL;
    buf->len = 0;
}

estc_err estc_buf_set(estc_buf *buf, const void *data, size_t len)
{
    if (buf == NULL || (data == NULL && len > 0))
        return ESTC_ERR_INVALID_ARG;
    /* malloc(0) may return NULL; keep one byte so success always has data. */
    uint8_t *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL)
        return ESTC_ERR_NOMEM;
    if (len > 0)
        memcpy(copy, data, len);
    estc_buf_free(buf);
    buf->data = copy;
    buf->len = len;
    return ESTC_OK;
}

estc_err estc_ctx_new(estc_ctx **out)
{
    if (out == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_ctx *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return ESTC_ERR_NOMEM;
    ctx->log_level = ESTC_LOG_INFO;
    estc_err err = estc__register_builtin(ctx);
    if (err != ESTC_OK) {
        estc_ctx_free(ctx);
        return err;
    }
    *out = ctx;
    return ESTC_OK;
}
