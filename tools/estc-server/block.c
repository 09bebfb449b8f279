/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Response helpers: bodies sent with the configured Block2 size, and error
 * answers with a short diagnostic payload.
 *
 * libcoap 4.3.1 has no call to set a server's block size. It honours a Block2
 * option that the application put into the response before
 * coap_add_data_large_response(), unless the request carries its own Block2,
 * in which case the request's size wins; so when the client asks for larger
 * blocks than configured, the request is handed over without its Block2.
 */
#include "server.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

int srv_opt_uint(const coap_pdu_t *pdu, coap_option_num_t num)
{
    coap_opt_iterator_t it;
    coap_opt_t *opt = coap_check_option(pdu, num, &it);
    if (opt == NULL)
        return SRV_CF_NONE;
    return (int)coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
}

void srv_respond_error(coap_pdu_t *response, coap_pdu_code_t code, const char *diag)
{
    coap_pdu_set_code(response, code);
    if (diag != NULL && diag[0] != '\0')
        coap_add_data(response, strlen(diag), (const uint8_t *)diag);
}

static void release_body(coap_session_t *session, void *app_ptr)
{
    (void)session;
    free(app_ptr);
}

void srv_respond_body(struct srv *s, coap_resource_t *r, coap_session_t *session,
                      const coap_pdu_t *request, const coap_string_t *query, coap_pdu_t *response,
                      coap_pdu_code_t code, unsigned cf, uint8_t *data, size_t len)
{
    const coap_pdu_t *req = request;
    coap_pdu_t *stripped = NULL;
    coap_block_t blk;
    int szx = s->opt.block_szx;
    uint64_t etag = 0;

    coap_pdu_set_code(response, code);
    /* libcoap refuses a block past the end without releasing the body: do it here. */
    if (coap_get_block(request, COAP_OPTION_BLOCK2, &blk) && blk.num != 0 &&
        len <= ((size_t)blk.num << (blk.szx + 4))) {
        free(data);
        srv_respond_error(response, COAP_RESPONSE_CODE_BAD_REQUEST, "no such block");
        return;
    }
    if (szx >= 0) {
        int has_b2 = coap_get_block(request, COAP_OPTION_BLOCK2, &blk);
        if (has_b2 && blk.num == 0 && (int)blk.szx > szx) {
            coap_opt_filter_t drop;
            coap_bin_const_t tok = coap_pdu_get_token(request);
            coap_option_filter_clear(&drop);
            coap_option_filter_set(&drop, COAP_OPTION_BLOCK2);
            stripped = coap_pdu_duplicate(request, session, tok.length, tok.s, &drop);
            if (stripped == NULL) {
                free(data);
                srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "out of memory");
                return;
            }
            req = stripped;
            has_b2 = 0;
        }
        if (!has_b2 && len > ((size_t)1 << (szx + 4))) {
            uint8_t buf[4];
            coap_add_option(response, COAP_OPTION_BLOCK2,
                            coap_encode_var_safe(buf, sizeof(buf), (1u << 3) | (unsigned)szx), buf);
        }
    }
    /*
     * ETag from the content: a retransmitted request answered again with the
     * same body must look like the same representation, or a client that is
     * fetching the blocks of the first answer starts over.
     */
    {
        unsigned char md[32];
        unsigned int mdlen = 0;
        if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1) {
            for (int i = 0; i < 8; i++)
                etag = (etag << 8) | md[i];
        }
        if (etag == 0)
            etag = 1;
    }
    /* Other failures: libcoap has released the body and set an error code. */
    if (!coap_add_data_large_response(r, session, req, response, query, (uint16_t)cf, -1, etag, len,
                                      data, release_body, data))
        srv_log(SRV_LOG_ERR, "cannot add a %zu-byte body to the response", len);
    if (stripped != NULL)
        coap_delete_pdu(stripped);
}
