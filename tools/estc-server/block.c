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
#include <time.h>

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

/*
 * Request bodies (Block1, RFC 7959 §2.5).
 *
 * libcoap 4.3.1 in COAP_BLOCK_SINGLE_BODY mode reassembles a Block1 body of
 * any size before the handler sees it, and without a Size1 option it hands
 * each block to the handler as a partial body. The server therefore runs
 * libcoap without COAP_BLOCK_SINGLE_BODY, so that a POST handler sees every
 * block, and this gate does the reassembly: it answers 4.01 at the first
 * block when the resource needs a client certificate the session does not
 * have, 4.13 with Size1 as soon as Size1 or the bytes received exceed the
 * limit, and calls the resource's handler once with the whole body.
 */

/* Transfers in progress across all sessions; the oldest is dropped past this. */
#define SRV_MAX_PARTIAL 64
#define SRV_MAX_GATED 16

struct partial {
    coap_session_t *session;
    coap_address_t peer; /* guards against a freed session's address being reused */
    coap_resource_t *r;
    uint8_t *buf;
    size_t len;
    double last;
};

/* Per worker, as its libcoap context and the resources in it. */
static _Thread_local struct {
    coap_resource_t *r;
    coap_method_handler_t h;
    enum srv_auth auth;
} gated[SRV_MAX_GATED];
static _Thread_local size_t n_gated;
static _Thread_local struct partial partials[SRV_MAX_PARTIAL];

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void partial_drop(struct partial *p)
{
    free(p->buf);
    memset(p, 0, sizeof(*p));
}

static struct partial *partial_find(coap_session_t *session, coap_resource_t *r)
{
    const coap_address_t *peer = coap_session_get_addr_remote(session);
    for (size_t i = 0; i < SRV_MAX_PARTIAL; i++) {
        struct partial *p = &partials[i];
        if (p->session == session && p->r == r && peer != NULL &&
            coap_address_equals(&p->peer, peer))
            return p;
    }
    return NULL;
}

static struct partial *partial_new(coap_session_t *session, coap_resource_t *r)
{
    struct partial *slot = NULL;
    const coap_address_t *peer = coap_session_get_addr_remote(session);

    for (size_t i = 0; i < SRV_MAX_PARTIAL; i++) {
        if (partials[i].session == NULL) {
            slot = &partials[i];
            break;
        }
        if (slot == NULL || partials[i].last < slot->last)
            slot = &partials[i];
    }
    if (slot->session != NULL) {
        srv_log(SRV_LOG_INFO, "too many request bodies in progress: dropping the oldest");
        partial_drop(slot);
    }
    slot->session = session;
    slot->r = r;
    if (peer != NULL)
        coap_address_copy(&slot->peer, peer);
    slot->last = mono_now();
    return slot;
}

void srv_block1_forget(coap_session_t *session)
{
    for (size_t i = 0; i < SRV_MAX_PARTIAL; i++)
        if (partials[i].session == session)
            partial_drop(&partials[i]);
}

void srv_block1_free(void)
{
    for (size_t i = 0; i < SRV_MAX_PARTIAL; i++)
        partial_drop(&partials[i]);
    n_gated = 0;
}

static void respond_too_large(struct srv *s, coap_pdu_t *response)
{
    uint8_t buf[4];
    coap_pdu_set_code(response, COAP_RESPONSE_CODE(413));
    coap_add_option(response, COAP_OPTION_SIZE1,
                    coap_encode_var_safe(buf, sizeof(buf), (unsigned)s->opt.max_body), buf);
    coap_add_data(response, strlen("request body too large"),
                  (const uint8_t *)"request body too large");
}

/* The request again, without Block1 and Size1, carrying `body`. */
static coap_pdu_t *whole_request(const coap_pdu_t *request, const uint8_t *body, size_t len)
{
    coap_bin_const_t tok = coap_pdu_get_token(request);
    coap_opt_iterator_t it;
    coap_opt_t *opt;
    coap_pdu_t *pdu;

    pdu = coap_pdu_init(coap_pdu_get_type(request), coap_pdu_get_code(request),
                        coap_pdu_get_mid(request), len + 2048);
    if (pdu == NULL)
        return NULL;
    if (!coap_add_token(pdu, tok.length, tok.s))
        goto fail;
    coap_option_iterator_init(request, &it, COAP_OPT_ALL);
    while ((opt = coap_option_next(&it)) != NULL) {
        if (it.number == COAP_OPTION_BLOCK1 || it.number == COAP_OPTION_SIZE1)
            continue;
        if (coap_add_option(pdu, it.number, coap_opt_length(opt), coap_opt_value(opt)) == 0)
            goto fail;
    }
    if (len > 0 && !coap_add_data(pdu, len, body))
        goto fail;
    return pdu;
fail:
    coap_delete_pdu(pdu);
    return NULL;
}

/* 1 when the session may send a body to a resource with this policy; else answers. */
static int auth_ok(struct srv *s, coap_session_t *session, enum srv_auth auth, coap_pdu_t *response)
{
    X509 *peer;
    if (auth == SRV_AUTH_NONE)
        return 1;
    peer = srv_tls_peer_cert(session);
    if (peer == NULL) {
        srv_respond_error(response, COAP_RESPONSE_CODE_UNAUTHORIZED, "client certificate required");
        return 0;
    }
    X509_free(peer);
    if (!srv_tls_peer_verified(session, s->client_store)) {
        srv_respond_error(response, COAP_RESPONSE_CODE_UNAUTHORIZED,
                          "client certificate not trusted");
        return 0;
    }
    if (auth == SRV_AUTH_OWN && !srv_tls_peer_verified(session, s->own_store)) {
        srv_respond_error(response, COAP_RESPONSE_CODE_FORBIDDEN,
                          "needs a certificate issued by this CA");
        return 0;
    }
    return 1;
}

static void gate(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                 const coap_string_t *query, coap_pdu_t *response)
{
    struct srv *s = coap_get_app_data(coap_session_get_context(session));
    coap_method_handler_t inner = NULL;
    enum srv_auth auth = SRV_AUTH_NONE;
    coap_block_t blk;
    const uint8_t *data = NULL;
    size_t len = 0, offset;
    int size1 = srv_opt_uint(request, COAP_OPTION_SIZE1);
    struct partial *p;
    coap_pdu_t *whole;

    for (size_t i = 0; i < n_gated; i++)
        if (gated[i].r == r) {
            inner = gated[i].h;
            auth = gated[i].auth;
        }
    if (inner == NULL || s == NULL) {
        srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "no handler");
        return;
    }
    if (!coap_get_data(request, &len, &data))
        len = 0;
    if (!coap_get_block(request, COAP_OPTION_BLOCK1, &blk) || (blk.num == 0 && !blk.m)) {
        /* One datagram: the handler checks who is asking and what was sent. */
        if ((size1 >= 0 && (unsigned long)size1 > (unsigned long)s->opt.max_body) ||
            len > (size_t)s->opt.max_body) {
            respond_too_large(s, response);
            return;
        }
        inner(r, session, request, query, response);
        return;
    }

    /* A transfer in blocks: nothing is kept for a session that may not send it. */
    p = partial_find(session, r);
    if (!auth_ok(s, session, auth, response) ||
        (size1 >= 0 && (unsigned long)size1 > (unsigned long)s->opt.max_body)) {
        if (coap_pdu_get_code(response) == COAP_EMPTY_CODE)
            respond_too_large(s, response);
        if (p != NULL)
            partial_drop(p);
        return;
    }
    offset = (size_t)blk.num << (blk.szx + 4);
    if (blk.num == 0) {
        if (p != NULL)
            partial_drop(p);
        p = partial_new(session, r);
    } else if (p == NULL || offset > p->len) {
        srv_respond_error(response, COAP_RESPONSE_CODE(408), "blocks missing: start again");
        if (p != NULL)
            partial_drop(p);
        return;
    }
    if (offset + len > (size_t)s->opt.max_body) {
        respond_too_large(s, response);
        partial_drop(p);
        return;
    }
    if (offset + len > p->len) {
        /* offset <= p->len: a block again (or a larger one) overlaps the end. */
        uint8_t *nb = realloc(p->buf, offset + len);
        if (nb == NULL) {
            partial_drop(p);
            srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "out of memory");
            return;
        }
        p->buf = nb;
        memcpy(p->buf + offset, data, len);
        p->len = offset + len;
    }
    p->last = mono_now();
    if (blk.m) {
        /* libcoap has put the Block1 option into the response. */
        coap_pdu_set_code(response, COAP_RESPONSE_CODE(231));
        return;
    }
    whole = whole_request(request, p->buf, p->len);
    partial_drop(p);
    if (whole == NULL) {
        srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "out of memory");
        return;
    }
    inner(r, session, whole, query, response);
    coap_delete_pdu(whole);
}

int srv_register_handler(coap_resource_t *r, coap_request_t method, coap_method_handler_t h,
                         enum srv_auth auth)
{
    if (method != COAP_REQUEST_POST && method != COAP_REQUEST_PUT && method != COAP_REQUEST_FETCH &&
        method != COAP_REQUEST_PATCH && method != COAP_REQUEST_IPATCH) {
        coap_register_handler(r, method, h);
        return 0;
    }
    if (n_gated == SRV_MAX_GATED)
        return -1;
    gated[n_gated].r = r;
    gated[n_gated].h = h;
    gated[n_gated].auth = auth;
    n_gated++;
    coap_register_handler(r, method, gate);
    return 0;
}
