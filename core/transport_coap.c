/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The default transport: CoAP over DTLS 1.2 (certificate mode) with libcoap
 * 4.3 and its OpenSSL backend.
 *
 * One libcoap context and one client session per transport; the session is
 * kept between requests and dropped after any failure. Responses are taken
 * block by block (libcoap asks for the next block itself) so that the size
 * cap holds before anything big is stored.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <time.h>

#include <coap3/coap.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <estc/transport.h>

#include "codec.h"
#include "transport_coap.h"

#define DEFAULT_TIMEOUT_MS 30000u
#define DEFAULT_MAX_RESPONSE (256u * 1024u)
#define DEFAULT_PORT 5684
/* The longest server chain accepted, as libcoap's cert_chain_verify_depth. */
#define CHAIN_DEPTH 5

struct coap_impl {
    /* configuration */
    char *host;
    char port[8];
    char *trust_file;
    char *identity;
    char *cert_file;
    char *key_file;
    /* Credentials in memory (estc__transport_coap_new_creds()): then the
     * three files above are NULL and libcoap reads no file. */
    X509_STORE *trust_store;
    X509 *cert;
    EVP_PKEY *key;
    unsigned timeout_ms;
    unsigned szx;
    size_t max_response;
    estc_log_fn log_fn;
    void *log_arg;
    bool (*cancel)(void *arg);
    void *cancel_arg;

    coap_context_t *ctx;
    coap_session_t *session;

    /* the exchange in progress */
    bool busy;
    bool done;
    estc_err err;
    uint8_t token[8];
    size_t token_len;
    estc_response *resp;
    size_t cap; /* bytes allocated in resp->payload */
    char *detail;
    size_t detail_len;
    bool identity_failed;
    /* The request in progress, for the retransmission lines: its method
     * and path ("DTLS" "handshake" during a handshake alone), and when it
     * (or its last retransmission) went out. */
    const char *what_method;
    const char *what_path;
    uint64_t last_tx_ms;
    unsigned dtls_retx; /* DTLS retransmissions in the current handshake */
};

static void say(struct coap_impl *impl, estc_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(struct coap_impl *impl, estc_log_level level, const char *fmt, ...)
{
    if (impl->log_fn == NULL)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    impl->log_fn(impl->log_arg, level, line);
}

/* End the exchange with @err and a detail text (the first one wins). */
static void fail(struct coap_impl *impl, estc_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct coap_impl *impl, estc_err err, const char *fmt, ...)
{
    if (!impl->busy || impl->done)
        return;
    impl->done = true;
    impl->err = err;
    if (impl->detail != NULL && impl->detail_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(impl->detail, impl->detail_len, fmt, ap);
        va_end(ap);
        say(impl, ESTC_LOG_ERROR, "%s", impl->detail);
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct coap_impl *impl_of(const coap_session_t *session)
{
    return session == NULL ? NULL : coap_session_get_app_data(session);
}

/* ------------------------------------------------------------------------ */
/* Server identity                                                           */
/* ------------------------------------------------------------------------ */

static bool is_ip_literal(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Whether @x carries the extended key usage id-kp-cmcRA (1.3.6.1.5.5.7.3.28). */
static bool has_cmc_ra(X509 *x)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    bool found = false;
    for (int i = 0; eku != NULL && i < sk_ASN1_OBJECT_num(eku) && !found; i++)
        found = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == NID_cmcRA;
    EXTENDED_KEY_USAGE_free(eku);
    return found;
}

/* Whether the leaf @x names our server in its subjectAltName, or is an EST
 * registration authority's (id-kp-cmcRA, RFC 7030 §3.6.1). Only for a leaf
 * whose chain verified to our trust anchors: then the EKU is trusted as much
 * as a name would be. */
static bool identity_ok(struct coap_impl *impl, X509 *x)
{
    int ok;
    if (is_ip_literal(impl->identity))
        ok = X509_check_ip_asc(x, impl->identity, 0);
    else
        ok = X509_check_host(x, impl->identity, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL);
    if (ok == 1)
        return true;
    if (!has_cmc_ra(x))
        return false;
    say(impl, ESTC_LOG_INFO, "server certificate does not name '%s' but is an EST RA's (id-kp-cmcRA)",
        impl->identity);
    return true;
}

/*
 * A certificate object that holds only the extensions of the certificate
 * @der (no names, no key): all the identity check reads (subjectAltName and
 * extendedKeyUsage; the subject is never checked). libcoap hands the
 * callback the DER of the certificate libssl has already verified, and
 * parsing it whole would decode its public key once more (OpenSSL 3.0
 * builds a decoder for that, the largest part of a parse). NULL when @der
 * does not have a certificate's shape or memory runs out.
 */
static X509 *extensions_only(const uint8_t *der, size_t len)
{
    estc__der cur = {der, len}, body, fields;
    estc__der_tlv cert, tbs, t;
    if (estc__der_expect(&cur, ESTC__DER_SEQUENCE, &cert) != ESTC_OK || cur.len != 0)
        return NULL;
    body = cert.contents;
    if (estc__der_expect(&body, ESTC__DER_SEQUENCE, &tbs) != ESTC_OK)
        return NULL;
    fields = tbs.contents;
    X509 *x = X509_new();
    bool ok = x != NULL;
    while (ok && fields.len > 0) {
        ok = estc__der_next(&fields, &t) == ESTC_OK;
        if (!ok || t.tag != ESTC__DER_CTX_CONS(3))
            continue; /* extensions: [3] EXPLICIT Extensions */
        const unsigned char *p = t.contents.p;
        STACK_OF(X509_EXTENSION) *exts = d2i_X509_EXTENSIONS(NULL, &p, (long)t.contents.len);
        ok = exts != NULL && p == t.contents.p + t.contents.len;
        for (int i = 0; ok && i < sk_X509_EXTENSION_num(exts); i++)
            ok = X509_add_ext(x, sk_X509_EXTENSION_value(exts, i), -1) == 1;
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    if (!ok) {
        X509_free(x);
        ERR_clear_error();
        return NULL;
    }
    return x;
}

/* libcoap calls this only with @validated set once OpenSSL has verified the
 * chain to our trust anchors. */
static int check_identity(const char *cn, const uint8_t *der, size_t der_len,
                          coap_session_t *session, unsigned depth, int validated, void *arg)
{
    (void)cn;
    (void)session;
    struct coap_impl *impl = arg;
    if (!validated) {
        impl->identity_failed = true;
        fail(impl, ESTC_ERR_VALIDATION, "server certificate chain (depth %u) not trusted", depth);
        return 0;
    }
    if (depth != 0)
        return 1;
    X509 *x = extensions_only(der, der_len);
    if (x == NULL) {
        impl->identity_failed = true;
        fail(impl, ESTC_ERR_VALIDATION, "server certificate unreadable");
        return 0;
    }
    bool ok = identity_ok(impl, x);
    X509_free(x);
    if (!ok) {
        impl->identity_failed = true;
        fail(impl, ESTC_ERR_VALIDATION,
             "server certificate does not name '%s' in its subjectAltName and is not "
             "an EST RA's (id-kp-cmcRA)",
             impl->identity);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* libcoap callbacks                                                         */
/* ------------------------------------------------------------------------ */

static unsigned opt_uint(const coap_pdu_t *pdu, coap_option_num_t num, bool *present)
{
    coap_opt_iterator_t it;
    coap_opt_t *opt = coap_check_option(pdu, num, &it);
    *present = opt != NULL;
    if (opt == NULL)
        return 0;
    return coap_decode_var_bytes(coap_opt_value(opt), coap_opt_length(opt));
}

static bool append(struct coap_impl *impl, const uint8_t *data, size_t len)
{
    estc_buf *b = &impl->resp->payload;
    if (len == 0)
        return true;
    if (b->len + len > impl->cap) {
        size_t cap = impl->cap == 0 ? 1024 : impl->cap;
        while (cap < b->len + len)
            cap *= 2;
        if (cap > impl->max_response)
            cap = impl->max_response;
        /* Not realloc(): the old block may hold a private key (/skg) and
         * must be wiped before it goes back to the allocator. */
        uint8_t *n = malloc(cap);
        if (n == NULL)
            return false;
        if (b->len > 0)
            memcpy(n, b->data, b->len);
        if (b->data != NULL)
            OPENSSL_cleanse(b->data, impl->cap);
        free(b->data);
        b->data = n;
        impl->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return true;
}

static coap_response_t on_response(coap_session_t *session, const coap_pdu_t *sent,
                                   const coap_pdu_t *rcvd, const coap_mid_t mid)
{
    (void)sent;
    (void)mid;
    struct coap_impl *impl = impl_of(session);
    if (impl == NULL || session != impl->session || !impl->busy || impl->done || impl->resp == NULL)
        return COAP_RESPONSE_OK; /* resp is NULL while only handshaking */
    coap_bin_const_t tok = coap_pdu_get_token(rcvd);
    if (tok.length != impl->token_len || memcmp(tok.s, impl->token, tok.length) != 0)
        return COAP_RESPONSE_OK; /* not ours (a late answer to an old request) */

    estc_response *resp = impl->resp;
    coap_pdu_code_t code = coap_pdu_get_code(rcvd);
    resp->code = (int)(code >> 5) * 100 + (int)(code & 0x1f);
    bool present;
    unsigned cf = opt_uint(rcvd, COAP_OPTION_CONTENT_FORMAT, &present);
    resp->content_format = present ? (int)cf : ESTC_CF_NONE;
    unsigned age = opt_uint(rcvd, COAP_OPTION_MAXAGE, &present);
    resp->has_max_age = present;
    resp->max_age = present ? age : 60;

    size_t len = 0, offset = 0, total = 0;
    const uint8_t *data = NULL;
    if (coap_get_data_large(rcvd, &len, &data, &offset, &total)) {
        say(impl, ESTC_LOG_DEBUG, "response %d.%02d: %zu bytes at %zu of %zu", resp->code / 100,
            resp->code % 100, len, offset, total);
        if (total > impl->max_response || offset + len > impl->max_response) {
            fail(impl, ESTC_ERR_LIMIT, "response body over the limit of %zu bytes",
                 impl->max_response);
            return COAP_RESPONSE_OK;
        }
        if (offset != resp->payload.len) {
            fail(impl, ESTC_ERR_PROTOCOL, "block at offset %zu, expected %zu", offset,
                 resp->payload.len);
            return COAP_RESPONSE_OK;
        }
        if (!append(impl, data, len)) {
            fail(impl, ESTC_ERR_NOMEM, "out of memory for the response");
            return COAP_RESPONSE_OK;
        }
    }
    coap_block_b_t block;
    if (coap_get_block_b(session, rcvd, COAP_OPTION_BLOCK2, &block) && block.m)
        return COAP_RESPONSE_OK; /* libcoap asks for the next block */
    impl->done = true;
    impl->err = ESTC_OK;
    return COAP_RESPONSE_OK;
}

/* Tell apart a chain the server could not get verified from other failures. */
static void handshake_failed(struct coap_impl *impl, coap_session_t *session)
{
    coap_tls_library_t lib;
    SSL *ssl = coap_session_get_tls(session, &lib);
    if (ssl != NULL && lib == COAP_TLS_LIBRARY_OPENSSL) {
        long v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK) {
            fail(impl, ESTC_ERR_VALIDATION, "server certificate rejected: %s",
                 X509_verify_cert_error_string(v));
            return;
        }
        /* An anonymous client (no certificate configured) that the server
         * asked for one (a CertificateRequest: its certificate types): the
         * server does not take anonymous clients. A refusal, not a
         * transport failure, so that it is not tried again. */
        const unsigned char *types = NULL;
        if (impl->cert == NULL && impl->cert_file == NULL &&
            SSL_get0_certificate_types(ssl, &types) > 0) {
            fail(impl, ESTC_ERR_SERVER,
                 "DTLS handshake with %s port %s failed: the server requires a client "
                 "certificate and none was given",
                 impl->host, impl->port);
            return;
        }
    }
    fail(impl, ESTC_ERR_TRANSPORT, "DTLS handshake with %s port %s failed", impl->host, impl->port);
}

static void on_nack(coap_session_t *session, const coap_pdu_t *sent,
                    const coap_nack_reason_t reason, const coap_mid_t mid)
{
    (void)sent;
    (void)mid;
    struct coap_impl *impl = impl_of(session);
    if (impl == NULL)
        return;
    switch (reason) {
    case COAP_NACK_TOO_MANY_RETRIES:
        fail(impl, ESTC_ERR_TIMEOUT, "no answer from %s port %s after retransmissions", impl->host,
             impl->port);
        break;
    case COAP_NACK_RST:
        fail(impl, ESTC_ERR_PROTOCOL, "the server reset the request");
        break;
    case COAP_NACK_TLS_FAILED:
        handshake_failed(impl, session);
        break;
    default:
        fail(impl, ESTC_ERR_TRANSPORT, "request to %s port %s not delivered", impl->host,
             impl->port);
        break;
    }
}

static int on_event(coap_session_t *session, const coap_event_t event)
{
    struct coap_impl *impl = impl_of(session);
    if (impl == NULL || session != impl->session)
        return 0;
    switch (event) {
    case COAP_EVENT_DTLS_ERROR:
        handshake_failed(impl, session);
        break;
    case COAP_EVENT_DTLS_CLOSED:
    case COAP_EVENT_SESSION_FAILED:
        fail(impl, ESTC_ERR_TRANSPORT, "DTLS session with %s port %s closed", impl->host,
             impl->port);
        break;
    default:
        break;
    }
    return 0;
}

/* The transport whose I/O libcoap is doing on this thread (set around
 * coap_io_process()): libcoap's log handler is one for the process and
 * gets no argument. */
static _Thread_local struct coap_impl *io_impl;

/* libcoap prints to stdout by default; the library is silent instead, but
 * for one line: libcoap's own notice of a CoAP retransmission
 * ("...: mid=0x1234: retransmission #N"), which it writes at debug level
 * only. A wait longer than a second gets a warning, so that it shows at the
 * default verbosity (estc without -v); the rest stays silent. */
static void coap_quiet(coap_log_t level, const char *message)
{
    struct coap_impl *impl = io_impl;
    (void)level;
    const char *at = message != NULL ? strstr(message, ": retransmission #") : NULL;
    if (impl == NULL || at == NULL || !impl->busy)
        return;
    unsigned n = 0;
    if (sscanf(at, ": retransmission #%u", &n) != 1)
        return;
    uint64_t now = now_ms();
    uint64_t waited = now - impl->last_tx_ms;
    impl->last_tx_ms = now;
    say(impl, waited > 1000 ? ESTC_LOG_WARNING : ESTC_LOG_INFO,
        "%s %s: no answer from %s port %s after %llu.%llu s, retrying "
        "(CoAP retransmission %u)",
        impl->what_method, impl->what_path, impl->host, impl->port,
        (unsigned long long)(waited / 1000), (unsigned long long)(waited % 1000 / 100), n);
}

/* OpenSSL retransmits a DTLS handshake flight itself, out of libcoap's
 * sight. Its timer callback is the one place that learns of it: called with
 * 0 when a flight's timer starts, and with the timeout that just ran out
 * when the flight goes again. The schedule is OpenSSL's own (1 s, doubling,
 * at most 60 s); the callback only adds the line a wait of a second or more
 * gets at the default verbosity. */
static unsigned int dtls_timer(SSL *ssl, unsigned int timer_us)
{
    (void)ssl;
    if (timer_us == 0)
        return 1000000;
    struct coap_impl *impl = io_impl;
    if (impl != NULL && impl->busy) {
        impl->dtls_retx++;
        say(impl, timer_us >= 1000000 ? ESTC_LOG_WARNING : ESTC_LOG_INFO,
            "DTLS handshake: no answer from %s port %s after %u.%u s, retrying "
            "(DTLS retransmission %u)",
            impl->host, impl->port, timer_us / 1000000, timer_us % 1000000 / 100000,
            impl->dtls_retx);
    }
    return timer_us >= 30000000 ? 60000000 : timer_us * 2;
}

/* ------------------------------------------------------------------------ */
/* Sessions                                                                  */
/* ------------------------------------------------------------------------ */

/* Drop the session and its context: freeing the context is what stops
 * libcoap from going on with a transfer we abandoned (a block-wise bomb). */
static void drop_session(struct coap_impl *impl)
{
    if (impl->session != NULL) {
        coap_session_set_app_data(impl->session, NULL);
        coap_session_release(impl->session);
        impl->session = NULL;
    }
    if (impl->ctx != NULL) {
        coap_free_context(impl->ctx);
        impl->ctx = NULL;
    }
}

static estc_err open_context(struct coap_impl *impl)
{
    impl->ctx = coap_new_context(NULL);
    if (impl->ctx == NULL)
        return ESTC_ERR_NOMEM;
    coap_context_set_block_mode(impl->ctx, COAP_BLOCK_USE_LIBCOAP);
    coap_register_response_handler(impl->ctx, on_response);
    coap_register_nack_handler(impl->ctx, on_nack);
    coap_register_event_handler(impl->ctx, on_event);
    return ESTC_OK;
}

/*
 * The in-memory credentials onto the new session's SSL: the trust anchors as
 * its own verification store (so nothing else, such as a default store of
 * the SSL_CTX, is trusted), the client certificate and its key. libcoap has
 * sent the ClientHello by now but processes no answer before
 * coap_io_process(): the server's Certificate and CertificateRequest, the
 * first uses of these, find them in place.
 */
static bool use_memory_creds(struct coap_impl *impl)
{
    coap_tls_library_t lib;
    SSL *ssl = coap_session_get_tls(impl->session, &lib);
    if (ssl == NULL || lib != COAP_TLS_LIBRARY_OPENSSL)
        return false;
    if (SSL_set1_verify_cert_store(ssl, impl->trust_store) != 1)
        return false;
    if (impl->cert != NULL &&
        (SSL_use_certificate(ssl, impl->cert) != 1 || SSL_use_PrivateKey(ssl, impl->key) != 1 ||
         SSL_check_private_key(ssl) != 1))
        return false;
    return true;
}

static estc_err open_session(struct coap_impl *impl)
{
    if (impl->ctx == NULL && open_context(impl) != ESTC_OK)
        return ESTC_ERR_NOMEM;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    int rc = getaddrinfo(impl->host, impl->port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(impl->detail, impl->detail_len, "cannot resolve %s: %s", impl->host,
                 gai_strerror(rc));
        return ESTC_ERR_TRANSPORT;
    }
    coap_address_t dst;
    coap_address_init(&dst);
    if (res->ai_addrlen > sizeof(dst.addr)) {
        freeaddrinfo(res);
        return ESTC_ERR_TRANSPORT;
    }
    dst.size = res->ai_addrlen;
    memcpy(&dst.addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);

    coap_dtls_pki_t pki;
    memset(&pki, 0, sizeof(pki));
    pki.version = COAP_DTLS_PKI_SETUP_VERSION;
    pki.verify_peer_cert = 1;
    pki.check_common_ca = 1; /* the chain must end at our trust file */
    pki.allow_self_signed = 0;
    pki.allow_expired_certs = 0;
    pki.cert_chain_validation = 1;
    pki.cert_chain_verify_depth = CHAIN_DEPTH;
    pki.validate_cn_call_back = check_identity;
    pki.cn_call_back_arg = impl;
    pki.client_sni = is_ip_literal(impl->host) ? NULL : impl->host;
    /* With credentials in memory libcoap gets no file at all: they go to
     * the session's SSL below. */
    pki.pki_key.key_type = COAP_PKI_KEY_PEM;
    pki.pki_key.key.pem.ca_file = impl->trust_file;
    pki.pki_key.key.pem.public_cert = impl->cert_file;
    pki.pki_key.key.pem.private_key = impl->key_file;

    impl->session = coap_new_client_session_pki(impl->ctx, NULL, &dst, COAP_PROTO_DTLS, &pki);
    if (impl->session == NULL) {
        snprintf(impl->detail, impl->detail_len,
                 "cannot set up a DTLS session to %s port %s (credentials unreadable?)", impl->host,
                 impl->port);
        return ESTC_ERR_TRANSPORT;
    }
    coap_session_set_app_data(impl->session, impl);
    coap_tls_library_t tls_lib;
    SSL *tls = coap_session_get_tls(impl->session, &tls_lib);
    if (tls != NULL && tls_lib == COAP_TLS_LIBRARY_OPENSSL)
        DTLS_set_timer_cb(tls, dtls_timer);
    if (impl->trust_store != NULL && !use_memory_creds(impl)) {
        snprintf(impl->detail, impl->detail_len,
                 "cannot give the DTLS session to %s port %s its credentials", impl->host,
                 impl->port);
        drop_session(impl);
        return ESTC_ERR_TRANSPORT;
    }
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

/* Add one percent-decoded option from @s[0..len). */
static estc_err add_text_option(coap_optlist_t **list, coap_option_num_t num, const char *s,
                                size_t len)
{
    char *dec = NULL;
    size_t n = 0;
    estc_err err = estc_pct_decode(s, len, &dec, &n);
    if (err != ESTC_OK)
        return err == ESTC_ERR_NOMEM ? err : ESTC_ERR_INVALID_ARG;
    if (n > 255) {
        free(dec);
        return ESTC_ERR_INVALID_ARG;
    }
    coap_optlist_t *o = coap_new_optlist(num, n, (const uint8_t *)dec);
    free(dec);
    if (o == NULL || !coap_insert_optlist(list, o))
        return ESTC_ERR_NOMEM;
    return ESTC_OK;
}

static estc_err add_uint_option(coap_optlist_t **list, coap_option_num_t num, unsigned v)
{
    uint8_t buf[4];
    coap_optlist_t *o = coap_new_optlist(num, coap_encode_var_safe(buf, sizeof(buf), v), buf);
    if (o == NULL || !coap_insert_optlist(list, o))
        return ESTC_ERR_NOMEM;
    return ESTC_OK;
}

static estc_err build_options(struct coap_impl *impl, const estc_request *req, size_t payload_len,
                              coap_optlist_t **list)
{
    estc_err err = ESTC_OK;
    const char *p = req->path + 1;
    const char *q = strchr(p, '?');
    const char *end = q != NULL ? q : p + strlen(p);
    /* "/" alone is the root: no Uri-Path option. */
    while (err == ESTC_OK && p < end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash != NULL ? slash : end;
        err = add_text_option(list, COAP_OPTION_URI_PATH, p, (size_t)(seg_end - p));
        p = slash != NULL ? slash + 1 : end;
    }
    if (q != NULL) {
        p = q + 1;
        end = p + strlen(p);
        while (err == ESTC_OK && p < end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *item_end = amp != NULL ? amp : end;
            err = add_text_option(list, COAP_OPTION_URI_QUERY, p, (size_t)(item_end - p));
            p = amp != NULL ? amp + 1 : end;
        }
    }
    if (err == ESTC_OK && req->content_format != ESTC_CF_NONE)
        err = add_uint_option(list, COAP_OPTION_CONTENT_FORMAT, (unsigned)req->content_format);
    if (err == ESTC_OK && req->accept != ESTC_CF_NONE)
        err = add_uint_option(list, COAP_OPTION_ACCEPT, (unsigned)req->accept);
    /* Ask for our block size early (RFC 7959 §2.4) and fix the Block1 size. */
    if (err == ESTC_OK && impl->szx < 6)
        err = add_uint_option(list, COAP_OPTION_BLOCK2, impl->szx);
    if (err == ESTC_OK && payload_len > (1u << (impl->szx + 4)))
        err = add_uint_option(list, COAP_OPTION_BLOCK1, (1u << 3) | impl->szx);
    return err;
}

static void release_copy(coap_session_t *session, void *app_ptr)
{
    (void)session;
    free(app_ptr);
}

/* One turn of the wait for an answer (or, @handshake, for the handshake's
 * end) until @deadline: at most 100 ms of CoAP I/O, so that the cancel
 * callback is asked that often. False, with impl->err set by fail(), when
 * the time is up, the callback cancels or the I/O fails. */
static bool io_step(struct coap_impl *impl, uint64_t deadline, bool handshake)
{
    uint64_t now = now_ms();
    if (now >= deadline) {
        if (handshake)
            fail(impl, ESTC_ERR_TIMEOUT, "DTLS handshake with %s port %s not done within %u ms",
                 impl->host, impl->port, impl->timeout_ms);
        else
            fail(impl, ESTC_ERR_TIMEOUT, "no complete answer from %s port %s within %u ms",
                 impl->host, impl->port, impl->timeout_ms);
        return false;
    }
    if (impl->cancel != NULL && impl->cancel(impl->cancel_arg)) {
        fail(impl, ESTC_ERR_CANCELLED, "cancelled");
        return false;
    }
    uint64_t wait = deadline - now;
    io_impl = impl;
    int rc = coap_io_process(impl->ctx, (uint32_t)(wait < 100 ? wait : 100));
    io_impl = NULL;
    if (rc < 0) {
        fail(impl, ESTC_ERR_TRANSPORT, "CoAP I/O failed");
        return false;
    }
    return true;
}

static estc_err coap_request(void *arg, const estc_request *req, estc_response *resp, char *detail,
                             size_t detail_len)
{
    struct coap_impl *impl = arg;
    impl->detail = detail;
    impl->detail_len = detail_len;
    impl->resp = resp;
    impl->cap = 0;
    impl->identity_failed = false;

    estc_err err = ESTC_OK;
    if (impl->session == NULL)
        err = open_session(impl);
    if (err != ESTC_OK)
        return err;

    coap_pdu_t *pdu = coap_new_pdu(COAP_MESSAGE_CON, (coap_pdu_code_t)req->method, impl->session);
    if (pdu == NULL)
        return ESTC_ERR_NOMEM;
    coap_session_new_token(impl->session, &impl->token_len, impl->token);
    if (!coap_add_token(pdu, impl->token_len, impl->token)) {
        coap_delete_pdu(pdu);
        return ESTC_ERR_NOMEM;
    }
    coap_optlist_t *opts = NULL;
    err = build_options(impl, req, req->payload_len, &opts);
    if (err == ESTC_OK && opts != NULL && !coap_add_optlist_pdu(pdu, &opts))
        err = ESTC_ERR_NOMEM;
    coap_delete_optlist(opts);
    if (err != ESTC_OK) {
        coap_delete_pdu(pdu);
        snprintf(detail, detail_len, "cannot encode the request options for %s", req->path);
        return err;
    }
    if (req->payload_len > 0) {
        /* libcoap keeps the body until the last block is acknowledged. */
        uint8_t *copy = malloc(req->payload_len);
        if (copy == NULL) {
            coap_delete_pdu(pdu);
            return ESTC_ERR_NOMEM;
        }
        memcpy(copy, req->payload, req->payload_len);
        if (!coap_add_data_large_request(impl->session, pdu, req->payload_len, copy, release_copy,
                                         copy)) {
            /* Only on a malformed PDU; libcoap then owns neither pointer reliably, so
             * they are not freed here. */
            snprintf(detail, detail_len, "cannot attach a %zu-byte payload", req->payload_len);
            drop_session(impl);
            return ESTC_ERR_TRANSPORT;
        }
    }

    impl->busy = true;
    impl->done = false;
    impl->err = ESTC_ERR_TIMEOUT;
    static const char *const names[] = {"", "GET", "POST", "PUT", "DELETE"};
    say(impl, ESTC_LOG_DEBUG, "%s %s", names[req->method], req->path);
    impl->what_method = names[req->method];
    impl->what_path = req->path;
    impl->last_tx_ms = now_ms();
    if (coap_send(impl->session, pdu) == COAP_INVALID_MID) {
        fail(impl, ESTC_ERR_TRANSPORT, "cannot send the request to %s port %s", impl->host,
             impl->port);
    }
    uint64_t deadline = now_ms() + impl->timeout_ms;
    while (!impl->done && io_step(impl, deadline, false))
        ;
    impl->busy = false;
    err = impl->err;
    if (err != ESTC_OK) {
        /* Whatever was half done (handshake, blocks) goes with the session. */
        drop_session(impl);
    } else if (resp->payload.len == 0) {
        free(resp->payload.data);
        resp->payload.data = NULL;
    }
    impl->resp = NULL;
    impl->detail = NULL;
    return err;
}

/* Drives the session's handshake to its end; on failure the session goes. */
static estc_err handshake(struct coap_impl *impl)
{
    estc_err err = ESTC_OK;
    if (impl->session == NULL)
        err = open_session(impl);
    if (err != ESTC_OK)
        return err;
    impl->busy = true;
    impl->done = false;
    impl->err = ESTC_ERR_TIMEOUT;
    impl->what_method = "DTLS";
    impl->what_path = "handshake";
    impl->last_tx_ms = now_ms();
    impl->dtls_retx = 0;
    uint64_t deadline = now_ms() + impl->timeout_ms;
    while (!impl->done && coap_session_get_state(impl->session) != COAP_SESSION_STATE_ESTABLISHED &&
           io_step(impl, deadline, true))
        ;
    err = impl->done ? impl->err : ESTC_OK;
    impl->busy = false;
    if (err != ESTC_OK)
        drop_session(impl);
    return err;
}

/* RFC 5929 §3.1: tls-unique is the first Finished message of the latest
 * handshake: ours in a full handshake (the client finishes first), the
 * server's in an abbreviated one. estc-server computes the same. */
static estc_err coap_tls_unique(void *arg, uint8_t *out, size_t out_size, size_t *out_len,
                                char *detail, size_t detail_len)
{
    struct coap_impl *impl = arg;
    impl->detail = detail;
    impl->detail_len = detail_len;
    impl->resp = NULL;
    impl->identity_failed = false;
    estc_err err = handshake(impl);
    impl->detail = NULL;
    if (err != ESTC_OK)
        return err;
    coap_tls_library_t lib;
    SSL *ssl = coap_session_get_tls(impl->session, &lib);
    if (ssl == NULL || lib != COAP_TLS_LIBRARY_OPENSSL) {
        snprintf(detail, detail_len, "no OpenSSL DTLS session to take tls-unique from");
        return ESTC_ERR_UNSUPPORTED;
    }
    uint8_t fin[EVP_MAX_MD_SIZE];
    size_t n = SSL_session_reused(ssl) ? SSL_get_peer_finished(ssl, fin, sizeof(fin))
                                       : SSL_get_finished(ssl, fin, sizeof(fin));
    if (n == 0 || n > sizeof(fin) || n > out_size) {
        snprintf(detail, detail_len, "no usable Finished message for tls-unique (%zu bytes)", n);
        return ESTC_ERR_PROTOCOL;
    }
    memcpy(out, fin, n);
    *out_len = n;
    return ESTC_OK;
}

/* The trust anchors of @creds as a new verification store. */
static estc_err new_store(X509 *const *trust, size_t n_trust, X509_STORE **out)
{
    X509_STORE *st = X509_STORE_new();
    if (st == NULL)
        return ESTC_ERR_NOMEM;
    for (size_t i = 0; i < n_trust; i++) {
        if (trust[i] == NULL || X509_STORE_add_cert(st, trust[i]) != 1) {
            X509_STORE_free(st);
            return ESTC_ERR_CRYPTO;
        }
    }
    *out = st;
    return ESTC_OK;
}

/*
 * The server chain of the live session verified again, without the network,
 * against @store: the chain exactly as the server sent it in the handshake,
 * checked as libssl checked it (purpose sslserver, the same depth, no
 * self-signed leaf unless it is an anchor itself, validity now), and the
 * leaf's identity as in check_identity().
 */
static estc_err recheck_chain(struct coap_impl *impl, X509_STORE *store, char *detail,
                              size_t detail_len)
{
    coap_tls_library_t lib;
    SSL *ssl = impl->session != NULL &&
                       coap_session_get_state(impl->session) == COAP_SESSION_STATE_ESTABLISHED
                   ? coap_session_get_tls(impl->session, &lib)
                   : NULL;
    if (ssl == NULL || lib != COAP_TLS_LIBRARY_OPENSSL) {
        snprintf(detail, detail_len, "no established DTLS session to take the server chain from");
        return ESTC_ERR_STATE;
    }
    X509 *leaf = SSL_get0_peer_certificate(ssl);
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(ssl); /* the client's view: with the leaf */
    if (leaf == NULL) {
        snprintf(detail, detail_len, "the session holds no server certificate");
        return ESTC_ERR_STATE;
    }
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    if (vc == NULL)
        return ESTC_ERR_NOMEM;
    estc_err err = ESTC_OK;
    if (X509_STORE_CTX_init(vc, store, leaf, sent) != 1 ||
        X509_STORE_CTX_set_default(vc, "ssl_server") != 1) {
        err = ESTC_ERR_NOMEM;
    } else {
        /* libcoap hands libssl its depth plus one (the anchor's level). */
        X509_VERIFY_PARAM_set_depth(X509_STORE_CTX_get0_param(vc), CHAIN_DEPTH + 1);
        if (X509_verify_cert(vc) != 1) {
            int v = X509_STORE_CTX_get_error(vc);
            snprintf(detail, detail_len, "server certificate chain (depth %d): %s",
                     X509_STORE_CTX_get_error_depth(vc), X509_verify_cert_error_string(v));
            err = ESTC_ERR_VALIDATION;
        } else if (!identity_ok(impl, leaf)) {
            snprintf(detail, detail_len,
                     "server certificate does not name '%s' in its subjectAltName and is not "
                     "an EST RA's (id-kp-cmcRA)",
                     impl->identity);
            err = ESTC_ERR_VALIDATION;
        }
    }
    X509_STORE_CTX_free(vc);
    ERR_clear_error();
    return err;
}

static void coap_reset(void *arg)
{
    drop_session(arg);
}

static void coap_impl_free(void *arg)
{
    struct coap_impl *impl = arg;
    if (impl == NULL)
        return;
    drop_session(impl);
    free(impl->host);
    free(impl->trust_file);
    free(impl->identity);
    free(impl->cert_file);
    free(impl->key_file);
    X509_STORE_free(impl->trust_store);
    X509_free(impl->cert);
    EVP_PKEY_free(impl->key);
    free(impl);
}

static const estc_transport_ops coap_ops = {
    .api_version = ESTC_TRANSPORT_API_VERSION,
    .name = "coap",
    .request = coap_request,
    .reset = coap_reset,
    .free = coap_impl_free,
    .tls_unique = coap_tls_unique,
};

estc_err estc__transport_coap_recheck(estc_transport *t, X509 *const *trust, size_t n_trust,
                                      char *detail, size_t detail_len)
{
    struct coap_impl *impl = estc__transport_impl(t, &coap_ops);
    if (impl == NULL || trust == NULL || n_trust == 0 || detail == NULL || detail_len == 0)
        return ESTC_ERR_INVALID_ARG;
    detail[0] = '\0';
    if (impl->trust_store == NULL) {
        snprintf(detail, detail_len, "the transport reads its trust anchors from a file");
        return ESTC_ERR_STATE;
    }
    X509_STORE *store = NULL;
    estc_err err = new_store(trust, n_trust, &store);
    if (err == ESTC_OK)
        err = recheck_chain(impl, store, detail, detail_len);
    if (err != ESTC_OK) {
        X509_STORE_free(store);
        return err;
    }
    /* Any later session of this transport verifies against the new anchors. */
    X509_STORE_free(impl->trust_store);
    impl->trust_store = store;
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Construction                                                              */
/* ------------------------------------------------------------------------ */

/* Split "coaps://host[:port][/...]" into @impl->host and @impl->port. */
static estc_err parse_server(struct coap_impl *impl, const char *uri)
{
    static const char scheme[] = "coaps://";
    if (strncasecmp(uri, scheme, sizeof(scheme) - 1) != 0)
        return ESTC_ERR_INVALID_ARG;
    const char *a = uri + sizeof(scheme) - 1;
    const char *host = a, *host_end;
    const char *after;
    if (*a == '[') {
        host = a + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL)
            return ESTC_ERR_INVALID_ARG;
        after = host_end + 1;
    } else {
        host_end = a + strcspn(a, ":/?#");
        after = host_end;
    }
    if (host_end == host || memchr(host, '@', (size_t)(host_end - host)) != NULL)
        return ESTC_ERR_INVALID_ARG;
    unsigned long port = DEFAULT_PORT;
    if (*after == ':') {
        char *end;
        after++;
        if (*after < '0' || *after > '9')
            return ESTC_ERR_INVALID_ARG;
        port = strtoul(after, &end, 10);
        if (port == 0 || port > 65535 || (*end != '\0' && *end != '/'))
            return ESTC_ERR_INVALID_ARG;
    } else if (*after != '\0' && *after != '/') {
        return ESTC_ERR_INVALID_ARG;
    }
    impl->host = strndup(host, (size_t)(host_end - host));
    if (impl->host == NULL)
        return ESTC_ERR_NOMEM;
    snprintf(impl->port, sizeof(impl->port), "%lu", port);
    return ESTC_OK;
}

static bool readable(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    fclose(f);
    return true;
}

static estc_err dup_opt(const char *in, char **out)
{
    *out = NULL;
    if (in == NULL)
        return ESTC_OK;
    *out = strdup(in);
    return *out == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
}

/* The in-memory credentials of @creds into @impl. */
static estc_err take_creds(struct coap_impl *impl, const estc__coap_creds *creds)
{
    impl->trust_store = X509_STORE_new();
    if (impl->trust_store == NULL)
        return ESTC_ERR_NOMEM;
    for (size_t i = 0; i < creds->n_trust; i++) {
        if (creds->trust[i] == NULL || X509_STORE_add_cert(impl->trust_store, creds->trust[i]) != 1)
            return ESTC_ERR_CRYPTO;
    }
    if (creds->cert != NULL) {
        if (X509_check_private_key(creds->cert, creds->key) != 1)
            return ESTC_ERR_CRYPTO;
        if (X509_up_ref(creds->cert) != 1)
            return ESTC_ERR_NOMEM;
        impl->cert = creds->cert;
        if (EVP_PKEY_up_ref(creds->key) != 1)
            return ESTC_ERR_NOMEM;
        impl->key = creds->key;
    }
    return ESTC_OK;
}

static estc_err coap_new(const estc_coap_config *cfg, const estc__coap_creds *creds,
                         estc_transport **out)
{
    if (cfg == NULL || out == NULL || cfg->server == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (creds == NULL && (cfg->trust_file == NULL || (cfg->cert_file == NULL) != (cfg->key_file == NULL)))
        return ESTC_ERR_INVALID_ARG;
    if (creds != NULL &&
        (cfg->trust_file != NULL || cfg->cert_file != NULL || cfg->key_file != NULL ||
         creds->n_trust == 0 || creds->trust == NULL || (creds->cert == NULL) != (creds->key == NULL)))
        return ESTC_ERR_INVALID_ARG;
    if (!coap_dtls_is_supported())
        return ESTC_ERR_UNSUPPORTED;
    struct coap_impl *impl = calloc(1, sizeof(*impl));
    if (impl == NULL)
        return ESTC_ERR_NOMEM;
    estc_err err = parse_server(impl, cfg->server);
    if (err == ESTC_OK && creds != NULL)
        err = take_creds(impl, creds);
    if (err == ESTC_OK)
        err = dup_opt(cfg->trust_file, &impl->trust_file);
    if (err == ESTC_OK)
        err = dup_opt(cfg->identity != NULL ? cfg->identity : impl->host, &impl->identity);
    if (err == ESTC_OK)
        err = dup_opt(cfg->cert_file, &impl->cert_file);
    if (err == ESTC_OK)
        err = dup_opt(cfg->key_file, &impl->key_file);
    if (err == ESTC_OK && (impl->identity[0] == '\0'))
        err = ESTC_ERR_INVALID_ARG;
    if (err == ESTC_OK && creds == NULL &&
        (!readable(impl->trust_file) || (impl->cert_file != NULL && !readable(impl->cert_file)) ||
         (impl->key_file != NULL && !readable(impl->key_file))))
        err = ESTC_ERR_IO;
    if (err != ESTC_OK) {
        coap_impl_free(impl);
        return err;
    }
    impl->timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    impl->szx = cfg->block_szx > 6 ? 6 : cfg->block_szx;
    impl->max_response = cfg->max_response != 0 ? cfg->max_response : DEFAULT_MAX_RESPONSE;
    impl->log_fn = cfg->log_fn;
    impl->log_arg = cfg->log_arg;
    impl->cancel = cfg->cancel;
    impl->cancel_arg = cfg->cancel_arg;

    coap_startup();
    coap_set_log_handler(coap_quiet);
    /* Debug level for coap_quiet()'s retransmission notices; it drops the
     * rest. The PDU dumps libcoap makes at that level go to the handler
     * too, never to stdout (where estc prints certificates). */
    coap_set_show_pdu_output(0);
    coap_set_log_level(LOG_DEBUG);
    coap_dtls_set_log_level(LOG_EMERG);
    return estc_transport_new(&coap_ops, impl, out);
}

estc_err estc_transport_coap_new(const estc_coap_config *cfg, estc_transport **out)
{
    return coap_new(cfg, NULL, out);
}

estc_err estc__transport_coap_new_creds(const estc_coap_config *cfg, const estc__coap_creds *creds,
                                        estc_transport **out)
{
    if (creds == NULL)
        return ESTC_ERR_INVALID_ARG;
    return coap_new(cfg, creds, out);
}
