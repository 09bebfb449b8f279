/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lwm2m-device — a small LwM2M device doing what an LwM2M client does at
 * bootstrap, with EST-coaps through estc's LwM2M integration API:
 *
 *  1. restore the persisted accounts and EST state; when there are none
 *     (or with --rebootstrap):
 *  2. open its own libcoap DTLS session to the Bootstrap Server (factory
 *     credentials, or the EST ones when the bootstrap account is in mode 4),
 *     send POST /bs?ep=NAME and serve the server's Writes to /0/x and /1/x
 *     (LwM2M TLV) and its Bootstrap-Finish (POST /bs) on that session;
 *  3. hand the same session to estc as its transport and report
 *     Bootstrap-Finish: /crts and /sen run when an account is in mode 4;
 *  4. print the credentials each management-server connection would use.
 *
 *   lwm2m-device --server coaps://127.0.0.1:5684 --ep dev-1 --trust ca.pem
 *       --bootstrap-cert idevid.pem --bootstrap-key idevid.key
 *       --key ADDR --cert ADDR --ca-prefix PREFIX --state FILE [--rebootstrap]
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <coap3/coap.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <estc/client.h>
#include <estc/lwm2m.h>
#include <estc/persist.h>
#include <estc/provider.h>
#include <estc/schedule.h>

#define CF_LWM2M_TLV 11542
#define TIMEOUT_MS 30000

struct acc {
    estc_lwm2m_account a;
    char uri[ESTC_LWM2M_MAX_URI + 1];
    bool used;
};

struct device {
    estc_ctx *ectx;
    coap_context_t *cctx;
    coap_session_t *session;
    /* Bootstrap */
    struct acc acc[ESTC_LWM2M_MAX_ACCOUNTS];
    bool finished, bs_answered;
    int bs_code;
    /* The request in flight through the EST transport */
    coap_bin_const_t *token;
    bool done;
    estc_response *resp;
    bool resp_fail;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- LwM2M TLV, the parts a Bootstrap-Write of /0 and /1 uses ---------- */

static long tlv_intval(const uint8_t *v, size_t n)
{
    long x = n > 0 && (v[0] & 0x80) ? -1 : 0;
    for (size_t i = 0; i < n && i < 8; i++)
        x = (long)((unsigned long)x << 8 | v[i]);
    return x;
}

/* Resource TLVs of Security instance @a (object 0) or skipped (object 1). */
static int tlv_parse(const uint8_t *p, size_t n, int obj, struct acc *a)
{
    while (n > 0) {
        uint8_t t = p[0];
        size_t hl = 1, id, len;
        size_t idl = (t & 0x20) ? 2 : 1, lt = (t >> 3) & 3;
        if (n < 1 + idl + lt)
            return -1;
        id = idl == 2 ? (size_t)p[1] << 8 | p[2] : p[1];
        hl += idl;
        if (lt == 0) {
            len = t & 7;
        } else {
            len = 0;
            for (size_t i = 0; i < lt; i++)
                len = len << 8 | p[hl + i];
            hl += lt;
        }
        if (n - hl < len)
            return -1;
        const uint8_t *v = p + hl;
        if ((t & 0xc0) == 0x00) {
            /* An Object Instance wrapping the resources. */
            if (tlv_parse(v, len, obj, a) != 0)
                return -1;
        } else if ((t & 0xc0) == 0xc0 && obj == 0) {
            if (id == 0 && len <= ESTC_LWM2M_MAX_URI) {
                memcpy(a->uri, v, len);
                a->uri[len] = '\0';
                a->a.server_uri = a->uri;
            } else if (id == 1) {
                a->a.bootstrap = len == 1 && v[0] != 0;
            } else if (id == 2) {
                a->a.security_mode = (int)tlv_intval(v, len);
            } else if (id == 10) {
                a->a.short_server_id = (uint16_t)tlv_intval(v, len);
            }
        }
        p += hl + len;
        n -= hl + len;
    }
    return 0;
}

/* PUT /0/x or /1/x: a Bootstrap-Write. */
static void hnd_write(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                      const coap_string_t *query, coap_pdu_t *response)
{
    struct device *d = coap_get_app_data(coap_session_get_context(session));
    coap_string_t *path = coap_get_uri_path(request);
    const uint8_t *data = NULL;
    size_t len = 0;
    unsigned obj = 0, inst = 0;
    char p[32];
    (void)r;
    (void)query;

    if (path == NULL || path->length >= sizeof(p)) {
        coap_delete_string(path);
        coap_pdu_set_code(response, COAP_RESPONSE_CODE_BAD_REQUEST);
        return;
    }
    memcpy(p, path->s, path->length);
    p[path->length] = '\0';
    coap_delete_string(path);
    coap_get_data(request, &len, &data);
    if (sscanf(p, "%u/%u", &obj, &inst) != 2 || obj > 1 || inst > 0xffff) {
        coap_pdu_set_code(response, COAP_RESPONSE_CODE_NOT_FOUND);
        return;
    }
    if (obj == 0) {
        struct acc *a = NULL;
        for (size_t i = 0; i < ESTC_LWM2M_MAX_ACCOUNTS && a == NULL; i++)
            if (!d->acc[i].used || d->acc[i].a.instance == inst)
                a = &d->acc[i];
        if (a == NULL) {
            coap_pdu_set_code(response, COAP_RESPONSE_CODE_NOT_ALLOWED);
            return;
        }
        memset(a, 0, sizeof(*a));
        a->used = true;
        a->a.instance = (uint16_t)inst;
        if (tlv_parse(data, len, 0, a) != 0) {
            a->used = false;
            coap_pdu_set_code(response, COAP_RESPONSE_CODE_BAD_REQUEST);
            return;
        }
        printf("bootstrap: write /0/%u: uri %s, bootstrap %s, security mode %d\n", inst,
               a->uri[0] ? a->uri : "-", a->a.bootstrap ? "yes" : "no", a->a.security_mode);
    } else {
        printf("bootstrap: write /1/%u (%zu bytes)\n", inst, len);
    }
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_CHANGED);
}

/* POST /bs from the server: Bootstrap-Finish. */
static void hnd_finish(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                       const coap_string_t *query, coap_pdu_t *response)
{
    struct device *d = coap_get_app_data(coap_session_get_context(session));
    (void)r;
    (void)request;
    (void)query;
    d->finished = true;
    printf("bootstrap: finish\n");
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_CHANGED);
}

static coap_response_t hnd_response(coap_session_t *session, const coap_pdu_t *sent,
                                    const coap_pdu_t *received, const coap_mid_t mid)
{
    struct device *d = coap_get_app_data(coap_session_get_context(session));
    coap_bin_const_t tok = coap_pdu_get_token(received);
    coap_opt_iterator_t it;
    coap_opt_t *o;
    (void)sent;
    (void)mid;
    if (d->token == NULL || !coap_binary_equal(d->token, &tok) || d->done)
        return COAP_RESPONSE_OK;
    coap_pdu_code_t code = coap_pdu_get_code(received);
    d->done = true;
    if (d->resp == NULL) { /* the Bootstrap-Request */
        d->bs_answered = true;
        d->bs_code = (int)(code >> 5) * 100 + (code & 31);
        return COAP_RESPONSE_OK;
    }
    estc_response *r = d->resp;
    size_t len = 0, off = 0, total = 0;
    const uint8_t *data = NULL;
    r->code = (int)(code >> 5) * 100 + (code & 31);
    o = coap_check_option(received, COAP_OPTION_CONTENT_FORMAT, &it);
    r->content_format = o != NULL
                            ? (int)coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o))
                            : ESTC_CF_NONE;
    o = coap_check_option(received, COAP_OPTION_MAXAGE, &it);
    r->has_max_age = o != NULL;
    r->max_age = o != NULL ? coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o)) : 60;
    if (coap_get_data_large(received, &len, &data, &off, &total) && len > 0 &&
        estc_buf_set(&r->payload, data, len) != ESTC_OK)
        d->resp_fail = true;
    return COAP_RESPONSE_OK;
}

static void hnd_nack(coap_session_t *session, const coap_pdu_t *sent, const coap_nack_reason_t r,
                     const coap_mid_t mid)
{
    struct device *d = coap_get_app_data(coap_session_get_context(session));
    (void)sent;
    (void)r;
    (void)mid;
    if (d->token != NULL && !d->done) {
        d->done = true;
        d->resp_fail = true;
    }
}

/* Send @method @path (segments and '?'-queries) and wait for the answer. */
static int send_wait(struct device *d, coap_pdu_code_t method, const char *path, int cf, int accept,
                     const uint8_t *payload, size_t len)
{
    coap_pdu_t *pdu = coap_pdu_init(COAP_MESSAGE_CON, method, coap_new_message_id(d->session),
                                    coap_session_max_pdu_size(d->session));
    uint8_t tok[8], b[4];
    size_t tl = 0;
    coap_optlist_t *opts = NULL;
    if (pdu == NULL)
        return -1;
    coap_session_new_token(d->session, &tl, tok);
    coap_delete_bin_const(d->token);
    d->token = coap_new_bin_const(tok, tl);
    if (d->token == NULL || !coap_add_token(pdu, tl, tok)) {
        coap_delete_pdu(pdu);
        return -1;
    }
    while (*path == '/')
        path++; /* coap_split_path() would make an empty first segment */
    const char *q = strchr(path, '?');
    size_t plen = q != NULL ? (size_t)(q - path) : strlen(path);
    uint8_t buf[256];
    size_t bl = sizeof(buf);
    int n = coap_split_path((const uint8_t *)path, plen, buf, &bl);
    for (uint8_t *p = buf; n-- > 0; p += coap_opt_size(p))
        coap_insert_optlist(
            &opts, coap_new_optlist(COAP_OPTION_URI_PATH, coap_opt_length(p), coap_opt_value(p)));
    if (cf != ESTC_CF_NONE)
        coap_insert_optlist(&opts,
                            coap_new_optlist(COAP_OPTION_CONTENT_FORMAT,
                                             coap_encode_var_safe(b, sizeof(b), (unsigned)cf), b));
    if (q != NULL) {
        bl = sizeof(buf);
        n = coap_split_query((const uint8_t *)q + 1, strlen(q + 1), buf, &bl);
        for (uint8_t *p = buf; n-- > 0; p += coap_opt_size(p))
            coap_insert_optlist(&opts, coap_new_optlist(COAP_OPTION_URI_QUERY, coap_opt_length(p),
                                                        coap_opt_value(p)));
    }
    if (accept != ESTC_CF_NONE)
        coap_insert_optlist(
            &opts, coap_new_optlist(COAP_OPTION_ACCEPT,
                                    coap_encode_var_safe(b, sizeof(b), (unsigned)accept), b));
    int ok = opts == NULL || coap_add_optlist_pdu(pdu, &opts);
    coap_delete_optlist(opts);
    if (ok && len > 0)
        ok = coap_add_data_large_request(d->session, pdu, len, payload, NULL, NULL);
    if (!ok) {
        coap_delete_pdu(pdu);
        return -1;
    }
    d->done = false;
    d->resp_fail = false;
    if (coap_send(d->session, pdu) == COAP_INVALID_MID)
        return -1;
    double end = now_ms() + TIMEOUT_MS;
    while (!d->done && now_ms() < end)
        coap_io_process(d->cctx, 100);
    return d->done && !d->resp_fail ? 0 : -1;
}

/* ---- estc transport over the device's own session ------------------------ */

static estc_err tr_request(void *impl, const estc_request *req, estc_response *resp, char *detail,
                           size_t detail_len)
{
    struct device *d = impl;
    d->resp = resp;
    int rc = send_wait(d, (coap_pdu_code_t)req->method, req->path, req->content_format, req->accept,
                       req->payload, req->payload_len);
    d->resp = NULL;
    if (rc != 0) {
        snprintf(detail, detail_len, "no answer on the bootstrap session");
        estc_response_clear(resp);
        return ESTC_ERR_TIMEOUT;
    }
    return ESTC_OK;
}

static const estc_transport_ops session_ops = {
    .api_version = ESTC_TRANSPORT_API_VERSION,
    .name = "lwm2m-bootstrap-session",
    .request = tr_request,
};

/* ---- credentials to files libcoap can read ----------------------------------- */

static int write_pem_certs(estc_ctx *ctx, const char *const *addrs, size_t n, const char *path)
{
    FILE *f = fopen(path, "w");
    int rc = f != NULL ? 0 : -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        estc_buf der = {0};
        const unsigned char *p;
        X509 *x = NULL;
        if (estc_cert_load(ctx, addrs[i], &der) == ESTC_OK) {
            p = der.data;
            x = d2i_X509(NULL, &p, (long)der.len);
        }
        if (x == NULL || PEM_write_X509(f, x) != 1)
            rc = -1;
        X509_free(x);
        estc_buf_free(&der);
    }
    if (f != NULL && fclose(f) != 0)
        rc = -1;
    return rc;
}

/* A PEM path for @src: itself when it is a file, else written into @dir. */
static int to_file(estc_ctx *ctx, const char *src, bool key, const char *dir, const char *name,
                   char *out, size_t out_len)
{
    if (access(src, R_OK) == 0) {
        snprintf(out, out_len, "%s", src);
        return 0;
    }
    snprintf(out, out_len, "%s/%s", dir, name);
    if (key)
        return estc_keyref_write(ctx, out, src) == ESTC_OK ? 0 : -1;
    return write_pem_certs(ctx, &src, 1, out);
}

static int open_session(struct device *d, const char *server, const estc_lwm2m_credentials *cr,
                        const char *dir)
{
    char cert[4096], key[4096], trust[4096];
    coap_uri_t uri;
    coap_address_t dst;
    coap_dtls_pki_t pki;
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res = NULL;
    char host[256];

    if (to_file(d->ectx, cr->cert, false, dir, "cert.pem", cert, sizeof(cert)) != 0 ||
        to_file(d->ectx, cr->key, true, dir, "key.pem", key, sizeof(key)) != 0)
        return -1;
    if (cr->n_trust > 0) {
        snprintf(trust, sizeof(trust), "%s/trust.pem", dir);
        if (write_pem_certs(d->ectx, cr->trust, cr->n_trust, trust) != 0)
            return -1;
    } else if (cr->trust_file != NULL) {
        snprintf(trust, sizeof(trust), "%s", cr->trust_file);
    } else {
        return -1;
    }
    if (coap_split_uri((const uint8_t *)server, strlen(server), &uri) != 0 ||
        uri.host.length >= sizeof(host))
        return -1;
    memcpy(host, uri.host.s, uri.host.length);
    host[uri.host.length] = '\0';
    char port[8];
    snprintf(port, sizeof(port), "%u", uri.port);
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    coap_address_init(&dst);
    memcpy(&dst.addr, res->ai_addr, res->ai_addrlen);
    dst.size = res->ai_addrlen;
    freeaddrinfo(res);

    memset(&pki, 0, sizeof(pki));
    pki.version = COAP_DTLS_PKI_SETUP_VERSION;
    pki.verify_peer_cert = 1;
    pki.check_common_ca = 1;
    pki.cert_chain_validation = 1;
    pki.cert_chain_verify_depth = 4;
    pki.client_sni = host;
    pki.pki_key.key_type = COAP_PKI_KEY_PEM;
    pki.pki_key.key.pem.public_cert = cert;
    pki.pki_key.key.pem.private_key = key;
    pki.pki_key.key.pem.ca_file = trust;
    d->session = coap_new_client_session_pki(d->cctx, NULL, &dst, COAP_PROTO_DTLS, &pki);
    printf("bootstrap: DTLS to %s with %s credentials\n", server,
           cr->est ? "the EST-enrolled" : "the factory");
    return d->session != NULL ? 0 : -1;
}

static void print_creds(uint16_t inst, const estc_lwm2m_credentials *c)
{
    printf("account /0/%u: certificate %s\n", inst, c->cert ? c->cert : "(none: not from estc)");
    printf("account /0/%u: key %s\n", inst, c->key ? c->key : "(none)");
    printf("account /0/%u: credentials from EST: %s\n", inst, c->est ? "yes" : "no");
    for (size_t i = 0; i < c->n_trust; i++)
        printf("account /0/%u: trust %s\n", inst, c->trust[i]);
    if (c->n_trust == 0)
        printf("account /0/%u: trust %s\n", inst, c->trust_file ? c->trust_file : "(own)");
}

static void usage(void)
{
    fputs("usage: lwm2m-device --server coaps://HOST:PORT --ep NAME --trust CA.pem\n"
          "         --bootstrap-cert FILE|ADDR --bootstrap-key FILE|ADDR\n"
          "         --key ADDR --cert ADDR --ca-prefix PREFIX --state FILE [--rebootstrap]\n",
          stderr);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"server", required_argument, NULL, 's'},
        {"ep", required_argument, NULL, 'e'},
        {"trust", required_argument, NULL, 't'},
        {"bootstrap-cert", required_argument, NULL, 'C'},
        {"bootstrap-key", required_argument, NULL, 'K'},
        {"key", required_argument, NULL, 'k'},
        {"cert", required_argument, NULL, 'c'},
        {"ca-prefix", required_argument, NULL, 'p'},
        {"state", required_argument, NULL, 'S'},
        {"rebootstrap", no_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    const char *server = NULL, *ep = NULL, *trust = NULL, *bcert = NULL, *bkey = NULL;
    const char *key = NULL, *cert = NULL, *prefix = NULL, *state = NULL;
    bool rebootstrap = false;
    int c, rc = 1;
    struct device d;
    estc_client *client = NULL;
    estc_lwm2m *lw = NULL;
    estc_provider *prov = NULL;
    char dir[] = "/tmp/lwm2m-device.XXXXXX", est_uri[512], subject[128];
    estc_err err;

    memset(&d, 0, sizeof(d));
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            server = optarg;
            break;
        case 'e':
            ep = optarg;
            break;
        case 't':
            trust = optarg;
            break;
        case 'C':
            bcert = optarg;
            break;
        case 'K':
            bkey = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'c':
            cert = optarg;
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'S':
            state = optarg;
            break;
        case 'r':
            rebootstrap = true;
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!server || !ep || !trust || !bcert || !bkey || !key || !cert || !prefix || !state ||
        strlen(ep) > 60 || optind != argc) {
        usage();
        return 2;
    }
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(est_uri, sizeof(est_uri), "%s/est", server);
    snprintf(subject, sizeof(subject), "/CN=%s", ep);

    estc_lwm2m_config cfg = {
        .bootstrap_cert = bcert,
        .bootstrap_key = bkey,
        .bootstrap_trust = trust,
        .cacerts_policy = ESTC_CACERTS_EST_AND_BOOTSTRAP,
    };
    /* The DTLS sessions here are the device's own: libcoap reads engine keys
     * as key references (estc_keyref_write()), through the estc provider,
     * which the application loads (the client then uses the same one). */
    if (estc_ctx_new(&d.ectx) != ESTC_OK || estc_provider_load(d.ectx, NULL, &prov) != ESTC_OK ||
        estc_client_new(d.ectx, &client) != ESTC_OK ||
        estc_client_set_server(client, est_uri) != ESTC_OK ||
        estc_client_add_trust_anchor(client, trust, true) != ESTC_OK ||
        estc_client_set_credentials(client, bcert, bkey) != ESTC_OK ||
        estc_client_set_subject(client, subject) != ESTC_OK ||
        estc_client_set_enrolled(client, key, cert, prefix) != ESTC_OK ||
        estc_state_stream_file(&cfg.stream, state) != ESTC_OK ||
        estc_lwm2m_new(client, &cfg, &lw) != ESTC_OK) {
        fprintf(stderr, "lwm2m-device: setup failed: %s\n",
                d.ectx ? estc_ctx_error_detail(d.ectx) : "no memory");
        goto out;
    }

    err = estc_lwm2m_restore(lw);
    if (err == ESTC_OK) {
        printf("state: restored %zu accounts and the EST state\n", estc_lwm2m_account_count(lw));
    } else if (err != ESTC_ERR_NOT_FOUND) {
        fprintf(stderr, "lwm2m-device: restore: %s (%s)\n", estc_strerror(err),
                estc_ctx_error_detail(d.ectx));
        goto out;
    }

    if (err == ESTC_ERR_NOT_FOUND || rebootstrap) {
        estc_lwm2m_credentials bc = {.cert = bcert, .key = bkey, .trust_file = trust};
        /* A known bootstrap account gives the credentials of its connection. */
        for (size_t i = 0; i < estc_lwm2m_account_count(lw); i++) {
            estc_lwm2m_account a;
            if (estc_lwm2m_account_get(lw, i, &a) == ESTC_OK && a.bootstrap &&
                estc_lwm2m_connection_opening(lw, a.instance, &bc) != ESTC_OK) {
                fprintf(stderr, "lwm2m-device: no credentials for the bootstrap account\n");
                goto out;
            }
        }
        coap_startup();
        coap_set_log_level(LOG_ERR);
        d.cctx = coap_new_context(NULL);
        if (d.cctx == NULL)
            goto out;
        coap_set_app_data(d.cctx, &d);
        coap_context_set_block_mode(d.cctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
        coap_register_response_handler(d.cctx, hnd_response);
        coap_register_nack_handler(d.cctx, hnd_nack);
        /* The device's server side on its client session: Writes and Finish. */
        coap_resource_t *r = coap_resource_unknown_init(hnd_write);
        coap_add_resource(d.cctx, r);
        r = coap_resource_init(coap_make_str_const("bs"), 0);
        coap_register_handler(r, COAP_REQUEST_POST, hnd_finish);
        coap_add_resource(d.cctx, r);
        if (open_session(&d, server, &bc, dir) != 0) {
            fprintf(stderr, "lwm2m-device: cannot open the DTLS session\n");
            goto out;
        }
        char bs_path[128];
        snprintf(bs_path, sizeof(bs_path), "/bs?ep=%s", ep);
        if (send_wait(&d, COAP_REQUEST_CODE_POST, bs_path, ESTC_CF_NONE, ESTC_CF_NONE, NULL, 0) !=
                0 ||
            d.bs_code != 204) {
            fprintf(stderr, "lwm2m-device: Bootstrap-Request failed (%d)\n", d.bs_code);
            goto out;
        }
        printf("bootstrap: request answered 2.04\n");
        double end = now_ms() + TIMEOUT_MS;
        while (!d.finished && now_ms() < end)
            coap_io_process(d.cctx, 100);
        if (!d.finished) {
            fprintf(stderr, "lwm2m-device: no Bootstrap-Finish\n");
            goto out;
        }
        estc_lwm2m_account accs[ESTC_LWM2M_MAX_ACCOUNTS];
        size_t n = 0;
        for (size_t i = 0; i < ESTC_LWM2M_MAX_ACCOUNTS; i++)
            if (d.acc[i].used)
                accs[n++] = d.acc[i].a;
        /* EST on the bootstrap session: the transport is our own session. */
        estc_transport *t = NULL;
        if (estc_transport_new(&session_ops, &d, &t) != ESTC_OK ||
            estc_client_set_transport(client, t) != ESTC_OK) {
            estc_transport_free(t);
            goto out;
        }
        bool had_cert = false;
        {
            estc_buf der = {0};
            had_cert = estc_client_certificate(client, &der) == ESTC_OK;
            estc_buf_free(&der);
        }
        err = estc_lwm2m_bootstrap_finished(lw, accs, n);
        if (err != ESTC_OK) {
            fprintf(stderr, "lwm2m-device: EST after Bootstrap-Finish: %s (%s)\n",
                    estc_strerror(err), estc_ctx_error_detail(d.ectx));
            goto out;
        }
        if (!estc_lwm2m_uses_est(lw))
            printf("est: not used (no account in security mode 4)\n");
        else if (had_cert)
            printf("est: already enrolled, nothing to do\n");
        else
            printf("est: enrolled over the bootstrap session (%zu CA certificates)\n",
                   estc_client_ca_count(client));
    } else {
        printf("est: state restored, no bootstrap and no enrollment\n");
    }

    for (size_t i = 0; i < estc_lwm2m_account_count(lw); i++) {
        estc_lwm2m_account a;
        estc_lwm2m_credentials cr;
        if (estc_lwm2m_account_get(lw, i, &a) != ESTC_OK)
            goto out;
        printf("account /0/%u: %s, uri %s, security mode %d\n", a.instance,
               a.bootstrap ? "bootstrap server" : "management server",
               a.server_uri ? a.server_uri : "-", a.security_mode);
        err = estc_lwm2m_connection_opening(lw, a.instance, &cr);
        if (err != ESTC_OK) {
            fprintf(stderr, "lwm2m-device: credentials of /0/%u: %s\n", a.instance,
                    estc_strerror(err));
            goto out;
        }
        print_creds(a.instance, &cr);
    }
    rc = 0;
out:
    if (d.session != NULL)
        coap_session_release(d.session);
    if (d.cctx != NULL) {
        coap_free_context(d.cctx);
        coap_cleanup();
    }
    coap_delete_bin_const(d.token);
    estc_lwm2m_free(lw);
    estc_client_free(client);
    estc_provider_unload(prov);
    estc_ctx_free(d.ectx);
    char p[sizeof(dir) + 16];
    const char *files[] = {"cert.pem", "key.pem", "trust.pem"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
    return rc;
}
