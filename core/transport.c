/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transport object: argument checks and error detail around one
 * implementation's operations.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <estc/transport.h>

#include "transport_coap.h"

struct estc_transport {
    const estc_transport_ops *ops;
    void *impl;
    char detail[512];
};

void estc_response_clear(estc_response *resp)
{
    if (resp == NULL)
        return;
    estc_buf_free(&resp->payload);
    resp->code = 0;
    resp->content_format = ESTC_CF_NONE;
    resp->max_age = 60;
    resp->has_max_age = false;
}

estc_err estc_transport_new(const estc_transport_ops *ops, void *impl, estc_transport **out)
{
    if (ops == NULL || ops->request == NULL || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    /* Version 1 structs end before tls_unique: never read it from them. */
    if (ops->api_version != 1 && ops->api_version != 2)
        return ESTC_ERR_DRIVER;
    estc_transport *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        if (ops->free != NULL)
            ops->free(impl);
        return ESTC_ERR_NOMEM;
    }
    t->ops = ops;
    t->impl = impl;
    *out = t;
    return ESTC_OK;
}

void estc_transport_free(estc_transport *t)
{
    if (t == NULL)
        return;
    if (t->ops->free != NULL)
        t->ops->free(t->impl);
    free(t);
}

void estc_transport_reset(estc_transport *t)
{
    if (t != NULL && t->ops->reset != NULL)
        t->ops->reset(t->impl);
}

const char *estc_transport_error_detail(const estc_transport *t)
{
    return t == NULL ? "" : t->detail;
}

estc_err estc_transport_request(estc_transport *t, const estc_request *req, estc_response *resp)
{
    estc_response_clear(resp);
    if (t == NULL || req == NULL || resp == NULL)
        return ESTC_ERR_INVALID_ARG;
    t->detail[0] = '\0';
    if (req->path == NULL || req->path[0] != '/' || req->method < ESTC_COAP_GET ||
        req->method > ESTC_COAP_DELETE || req->content_format < ESTC_CF_NONE ||
        req->content_format > 65535 || req->accept < ESTC_CF_NONE || req->accept > 65535 ||
        (req->payload == NULL && req->payload_len != 0)) {
        strcpy(t->detail, "invalid request");
        return ESTC_ERR_INVALID_ARG;
    }
    estc_err err = t->ops->request(t->impl, req, resp, t->detail, sizeof(t->detail));
    if (err != ESTC_OK)
        estc_response_clear(resp);
    return err;
}

estc_err estc_transport_tls_unique(estc_transport *t, uint8_t *out, size_t out_size,
                                   size_t *out_len)
{
    if (t == NULL || out == NULL || out_len == NULL)
        return ESTC_ERR_INVALID_ARG;
    t->detail[0] = '\0';
    *out_len = 0;
    if (t->ops->api_version < 2 || t->ops->tls_unique == NULL) {
        snprintf(t->detail, sizeof(t->detail), "the %s transport has no tls-unique value",
                 t->ops->name != NULL ? t->ops->name : "custom");
        return ESTC_ERR_UNSUPPORTED;
    }
    return t->ops->tls_unique(t->impl, out, out_size, out_len, t->detail, sizeof(t->detail));
}

void *estc__transport_impl(estc_transport *t, const estc_transport_ops *ops)
{
    return t != NULL && t->ops == ops ? t->impl : NULL;
}
