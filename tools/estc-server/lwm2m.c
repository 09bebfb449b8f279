/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The optional LwM2M bootstrap role (--lwm2m-bootstrap): POST /bs?ep=NAME is
 * answered 2.04; then, on the same DTLS session, the server acts as a CoAP
 * client towards the device: it writes Security object instances (/0/x,
 * Security Mode 4 "Certificate mode with EST" by default) and a Server
 * object instance (/1/x) in LwM2M TLV (CF 11542), and sends
 * Bootstrap-Finish (POST /bs). EST is served on the same session as always.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CF_LWM2M_TLV 11542

/* One bootstrap in progress. */
struct srv_lw {
    coap_session_t *session; /* referenced */
    char ep[64];
    int step; /* index into the steps of this bootstrap; -1: not started */
    coap_bin_const_t *token;
    int n_steps;
};

/* Per worker: a bootstrap runs on its session, in the worker that has it. */
static _Thread_local struct srv_lw lw_list[SRV_MAX_LWM2M];

/* TLV (OMA-TS-LightweightM2M-V1_1 §7.4.3): resource with value. */
static size_t tlv_put(uint8_t *out, size_t cap, size_t at, unsigned id, const void *val, size_t len)
{
    uint8_t h[6];
    size_t n = 0;
    uint8_t type = 0xc0; /* resource with value */
    if (id > 0xff)
        type |= 0x20;
    if (len < 8)
        type |= (uint8_t)len;
    else if (len < 0x100)
        type |= 0x08;
    else
        type |= 0x10;
    h[n++] = type;
    if (id > 0xff)
        h[n++] = (uint8_t)(id >> 8);
    h[n++] = (uint8_t)id;
    if (len >= 8 && len < 0x100) {
        h[n++] = (uint8_t)len;
    } else if (len >= 0x100) {
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    }
    if (at == SIZE_MAX || at + n + len > cap || len > 0xffff)
        return SIZE_MAX;
    memcpy(out + at, h, n);
    memcpy(out + at + n, val, len);
    return at + n + len;
}

static size_t tlv_int(uint8_t *out, size_t cap, size_t at, unsigned id, long v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    if (v >= -128 && v <= 127)
        return tlv_put(out, cap, at, id, b + 3, 1);
    if (v >= -32768 && v <= 32767)
        return tlv_put(out, cap, at, id, b + 2, 2);
    return tlv_put(out, cap, at, id, b, 4);
}

static size_t tlv_str(uint8_t *out, size_t cap, size_t at, unsigned id, const char *s)
{
    return tlv_put(out, cap, at, id, s, strlen(s));
}

/*
 * The steps: [bootstrap account /0/0], management account /0/1, server
 * /1/1, Bootstrap-Finish. Fills path and payload; returns 0, or -1 past the end.
 */
static int build_step(struct srv *s, int step, char *path, size_t path_len, uint8_t *buf,
                      size_t cap, size_t *len, coap_pdu_code_t *code)
{
    size_t at = 0;
    if (s->opt.lwm2m_bs_mode < 0)
        step++; /* no bootstrap account written */
    *code = COAP_REQUEST_CODE_PUT;
    switch (step) {
    case 0:
        snprintf(path, path_len, "0/0");
        at = tlv_str(buf, cap, at, 0, s->opt.lwm2m_bs_uri);
        at = tlv_put(buf, cap, at, 1, "\x01", 1);
        at = tlv_int(buf, cap, at, 2, s->opt.lwm2m_bs_mode);
        break;
    case 1:
        snprintf(path, path_len, "0/1");
        at = tlv_str(buf, cap, at, 0, s->opt.lwm2m_uri);
        at = tlv_put(buf, cap, at, 1, "\x00", 1);
        at = tlv_int(buf, cap, at, 2, s->opt.lwm2m_mode);
        at = tlv_int(buf, cap, at, 10, 1);
        break;
    case 2:
        snprintf(path, path_len, "1/1");
        at = tlv_int(buf, cap, at, 0, 1);     /* Short Server ID */
        at = tlv_int(buf, cap, at, 1, 86400); /* Lifetime */
        at = tlv_str(buf, cap, at, 7, "U");   /* Binding */
        break;
    case 3:
        snprintf(path, path_len, "bs");
        *code = COAP_REQUEST_CODE_POST;
        break;
    default:
        return -1;
    }
    if (at == SIZE_MAX)
        return -1;
    *len = at;
    return 0;
}

static void lw_drop(struct srv_lw *l)
{
    if (l->session != NULL)
        coap_session_release(l->session);
    coap_delete_bin_const(l->token);
    memset(l, 0, sizeof(*l));
}

/* Send the next request of @l; drops it when done or on failure. */
static void lw_send_next(struct srv *s, struct srv_lw *l)
{
    char path[16];
    uint8_t buf[512], tok[8];
    size_t len = 0, tok_len = 0;
    coap_pdu_code_t code;
    coap_pdu_t *pdu;
    const char *seg, *slash;

    l->step++;
    if (build_step(s, l->step, path, sizeof(path), buf, sizeof(buf), &len, &code) != 0) {
        srv_log(SRV_LOG_INFO, "lwm2m: bootstrap of '%s' finished", l->ep);
        lw_drop(l);
        return;
    }
    pdu = coap_pdu_init(COAP_MESSAGE_CON, code, coap_new_message_id(l->session),
                        coap_session_max_pdu_size(l->session));
    if (pdu == NULL)
        goto fail;
    coap_session_new_token(l->session, &tok_len, tok);
    if (!coap_add_token(pdu, tok_len, tok))
        goto fail;
    for (seg = path; seg != NULL; seg = slash != NULL ? slash + 1 : NULL) {
        slash = strchr(seg, '/');
        size_t n = slash != NULL ? (size_t)(slash - seg) : strlen(seg);
        if (coap_add_option(pdu, COAP_OPTION_URI_PATH, n, (const uint8_t *)seg) == 0)
            goto fail;
    }
    if (len > 0) {
        uint8_t cf[4];
        size_t cfl = coap_encode_var_safe(cf, sizeof(cf), CF_LWM2M_TLV);
        if (coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT, cfl, cf) == 0 ||
            !coap_add_data(pdu, len, buf))
            goto fail;
    }
    coap_delete_bin_const(l->token);
    l->token = coap_new_bin_const(tok, tok_len);
    if (l->token == NULL)
        goto fail;
    srv_log(SRV_LOG_INFO, "lwm2m: %s /%s to '%s' (%zu bytes TLV)",
            code == COAP_REQUEST_CODE_PUT ? "write" : "bootstrap-finish", path, l->ep, len);
    if (coap_send(l->session, pdu) == COAP_INVALID_MID) {
        pdu = NULL; /* freed by coap_send */
        goto fail;
    }
    return;
fail:
    if (pdu != NULL)
        coap_delete_pdu(pdu);
    srv_log(SRV_LOG_ERR, "lwm2m: cannot send to '%s'", l->ep);
    lw_drop(l);
}

static struct srv *srv_of(coap_session_t *session)
{
    return coap_get_app_data(coap_session_get_context(session));
}

static void hnd_bs(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                   const coap_string_t *query, coap_pdu_t *response)
{
    struct srv *s = srv_of(session);
    const char *q = query != NULL ? (const char *)query->s : "";
    size_t qn = query != NULL ? query->length : 0, i, epn = 0;
    const char *ep = NULL;
    X509 *peer;
    (void)r;
    (void)request;

    for (i = 0; i < qn;) {
        const char *amp = memchr(q + i, '&', qn - i);
        size_t n = amp != NULL ? (size_t)(amp - (q + i)) : qn - i;
        if (n > 3 && memcmp(q + i, "ep=", 3) == 0) {
            ep = q + i + 3;
            epn = n - 3;
        }
        i += n + 1;
    }
    if (ep == NULL || epn >= sizeof(lw_list[0].ep)) {
        srv_respond_error(response, COAP_RESPONSE_CODE_BAD_REQUEST, "ep=NAME missing");
        return;
    }
    for (i = 0; i < SRV_MAX_LWM2M && lw_list[i].session != NULL; i++)
        ;
    if (i == SRV_MAX_LWM2M) {
        srv_respond_error(response, COAP_RESPONSE_CODE_SERVICE_UNAVAILABLE, "busy");
        return;
    }
    peer = srv_tls_peer_cert(session);
    srv_log(SRV_LOG_INFO, "lwm2m: bootstrap request from '%.*s', client certificate: %s", (int)epn,
            ep,
            peer == NULL                                   ? "none"
            : srv_tls_peer_verified(session, s->own_store) ? "issued by the EST CA"
                                                           : "other");
    X509_free(peer);
    memcpy(lw_list[i].ep, ep, epn);
    lw_list[i].ep[epn] = '\0';
    lw_list[i].session = coap_session_reference(session);
    lw_list[i].step = -2; /* started by srv_lwm2m_poll() after this response */
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_CHANGED);
}

static coap_response_t hnd_response(coap_session_t *session, const coap_pdu_t *sent,
                                    const coap_pdu_t *received, const coap_mid_t mid)
{
    struct srv *s = srv_of(session);
    coap_bin_const_t tok = coap_pdu_get_token(received);
    coap_pdu_code_t code = coap_pdu_get_code(received);
    (void)sent;
    (void)mid;
    for (int i = 0; i < SRV_MAX_LWM2M; i++) {
        struct srv_lw *l = &lw_list[i];
        if (l->session != session || l->token == NULL || l->step < 0 ||
            !coap_binary_equal(l->token, &tok))
            continue;
        if (code != COAP_RESPONSE_CODE_CHANGED && code != COAP_RESPONSE_CODE_CREATED) {
            srv_log(SRV_LOG_ERR, "lwm2m: '%s' answered %d.%02d; bootstrap abandoned", l->ep,
                    code >> 5, code & 31);
            lw_drop(l);
        } else {
            lw_send_next(s, l);
        }
        return COAP_RESPONSE_OK;
    }
    return COAP_RESPONSE_OK;
}

static void hnd_nack(coap_session_t *session, const coap_pdu_t *sent, const coap_nack_reason_t r,
                     const coap_mid_t mid)
{
    (void)mid;
    (void)r;
    if (sent == NULL)
        return;
    coap_bin_const_t tok = coap_pdu_get_token(sent);
    for (int i = 0; i < SRV_MAX_LWM2M; i++) {
        struct srv_lw *l = &lw_list[i];
        if (l->session == session && l->token != NULL && coap_binary_equal(l->token, &tok)) {
            srv_log(SRV_LOG_ERR, "lwm2m: no answer from '%s'; bootstrap abandoned", l->ep);
            lw_drop(l);
        }
    }
}

int srv_lwm2m_register(struct srv *s, coap_context_t *ctx)
{
    coap_str_const_t *uri;
    coap_resource_t *r;
    (void)s;
    uri = coap_new_str_const((const uint8_t *)"bs", 2);
    if (uri == NULL)
        return -1;
    r = coap_resource_init(uri, COAP_RESOURCE_FLAGS_RELEASE_URI);
    if (r == NULL) {
        coap_delete_str_const(uri);
        return -1;
    }
    coap_register_handler(r, COAP_REQUEST_POST, hnd_bs);
    coap_add_resource(ctx, r);
    coap_register_response_handler(ctx, hnd_response);
    coap_register_nack_handler(ctx, hnd_nack);
    return 0;
}

void srv_lwm2m_poll(struct srv *s)
{
    for (int i = 0; i < SRV_MAX_LWM2M; i++) {
        if (lw_list[i].session != NULL && lw_list[i].step == -2) {
            lw_list[i].step = -1;
            lw_send_next(s, &lw_list[i]);
        }
    }
}

void srv_lwm2m_free(void)
{
    for (int i = 0; i < SRV_MAX_LWM2M; i++)
        if (lw_list[i].session != NULL)
            lw_drop(&lw_list[i]);
}
