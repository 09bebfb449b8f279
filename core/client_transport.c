/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The EST client's DTLS session behind each request, and the exchange rules
 * every operation shares: resource paths and discovery, 5.03 + Max-Age,
 * lost answers, proof-of-possession, errors.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "client_internal.h"
#include "transport_coap.h"

/* Exchanges that may end without any answer before an operation fails. */
#define ESTC__MAX_LOST_EXCHANGES 3

void estc__client_reset_transport(estc_client *c)
{
    if (c->custom_transport) {
        estc_transport_reset(c->transport);
        return;
    }
    estc_transport_free(c->transport);
    c->transport = NULL;
    c->transport_creds = ESTC__CREDS_NONE;
}

bool estc__is_engine_address(estc_client *c, const char *s)
{
    return estc_engine_known(c->ctx, s);
}

/* ---- the DTLS session ---------------------------------------------------- */

/* Every certificate of @list appended to @out. */
static bool x509_append(estc_client *c, STACK_OF(X509) *out, const estc__der_list *list)
{
    for (size_t i = 0; i < list->n; i++) {
        X509 *x = estc__x509_cached(c, &list->items[i]);
        if (x == NULL || !sk_X509_push(out, x)) {
            X509_free(x);
            return false;
        }
    }
    return true;
}

/* The trust anchors for the server's chain: the explicit ones (from /crts)
 * once there are, with the configured explicit anchors; else all. */
static estc_err load_trust(estc_client *c, STACK_OF(X509) *out)
{
    bool ok = true;
    if (c->have_explicit)
        ok = x509_append(c, out, &c->explicit_certs);
    for (size_t i = 0; ok && i < c->n_anchors; i++) {
        if (!c->anchors[i].implicit || !c->have_explicit)
            ok = x509_append(c, out, &c->anchors[i].certs);
    }
    if (!ok)
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "a trust anchor does not parse");
    if (sk_X509_num(out) == 0)
        return estc_error(c->ctx, ESTC_ERR_STATE, "no trust anchor: configure one");
    return ESTC_OK;
}

/* Never a prompt on the terminal for an encrypted PEM key. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)arg;
    return -1;
}

/* The first PEM object of the file at @path: a certificate or a key. */
static estc_err read_pem_file(estc_client *c, const char *path, X509 **cert, EVP_PKEY **key)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        return estc_error(c->ctx, ESTC_ERR_IO, "%s: %s", path, strerror(errno));
    }
    if (cert != NULL)
        *cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
    else
        *key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (cert != NULL ? *cert == NULL : *key == NULL) {
        ERR_clear_error();
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "%s: no PEM %s", path,
                          cert != NULL ? "certificate" : "private key (or key reference)");
    }
    return ESTC_OK;
}

/* The client certificate at @src (an engine address or a PEM file). */
static estc_err load_cert(estc_client *c, const char *src, X509 **out)
{
    if (!estc__is_engine_address(c, src))
        return read_pem_file(c, src, out, NULL);
    estc_buf der = {0};
    estc_err err = ESTC_OK;
    if (c->held_cert != NULL && strcmp(src, c->cert_addr) == 0)
        err = estc_buf_set(&der, c->held_cert->data, c->held_cert->len); /* read already */
    else
        err = estc_cert_load(c->ctx, src, &der);
    if (err != ESTC_OK)
        return err;
    const unsigned char *p = der.data;
    *out = d2i_X509(NULL, &p, (long)der.len);
    if (*out == NULL || p != der.data + der.len) {
        X509_free(*out);
        *out = NULL;
        ERR_clear_error();
        err = estc_error(c->ctx, ESTC_ERR_FORMAT, "%s: not a certificate", src);
    }
    estc_buf_free(&der);
    return err;
}

/* The client key at @src: a PEM file, the file of an engine whose keys are
 * files, or any other engine's key through the provider (from a key
 * reference built in memory, wiped after use: it holds the address). */
static estc_err load_key(estc_client *c, const char *src, EVP_PKEY **out)
{
    if (!estc__is_engine_address(c, src))
        return read_pem_file(c, src, NULL, out);
    if ((estc_engine_caps(c->ctx, src) & ESTC_CAP_FILES) != 0) {
        char *p = NULL;
        estc_err err = estc_key_file_path(c->ctx, src, &p);
        if (err == ESTC_OK)
            err = read_pem_file(c, p, NULL, out);
        free(p);
        return err;
    }
    /* Engine keys reach libssl through the provider, in the default library
     * context: loaded the first time one is needed, since every decoder
     * OpenSSL 3.0 builds walks the decoders of each loaded provider (a run
     * with file keys need not pay that). An application that loaded it
     * itself (ESTC_ERR_EXISTS) lends its own. */
    estc_err err = ESTC_OK;
    if (c->provider == NULL) {
        err = estc_provider_load(c->ctx, NULL, &c->provider);
        if (err == ESTC_ERR_EXISTS) {
            estc_ctx_clear_error(c->ctx);
            err = ESTC_OK;
        }
        if (err != ESTC_OK)
            return estc_error(c->ctx, err, "%s: the estc OpenSSL provider cannot be loaded: %s",
                              src, estc_ctx_error_detail(c->ctx));
    }
    estc_buf pem = {0};
    err = estc_keyref_pem(src, &pem);
    if (err != ESTC_OK)
        return estc_error(c->ctx, err, "%s: no key reference", src);
    estc_ctx_clear_error(c->ctx);
    BIO *bio = BIO_new_mem_buf(pem.data, (int)pem.len);
    *out = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
    BIO_free(bio);
    OPENSSL_cleanse(pem.data, pem.len);
    estc_buf_free(&pem);
    if (*out == NULL) {
        ERR_clear_error();
        /* The provider left the engine's own reason in the detail. */
        const char *why = estc_ctx_error_detail(c->ctx);
        char *copy = why[0] != '\0' ? strdup(why) : NULL;
        err = estc_error(c->ctx, ESTC_ERR_ENGINE, "%s: the key cannot be used%s%s", src,
                         copy != NULL ? ": " : "", copy != NULL ? copy : "");
        free(copy);
        return err;
    }
    return ESTC_OK;
}

void estc__client_drop_checked(estc_client *c)
{
    X509_free(c->checked.cert);
    EVP_PKEY_free(c->checked.key);
    free(c->checked.cert_src);
    free(c->checked.key_src);
    memset(&c->checked, 0, sizeof(c->checked));
}

/* The configured pair for @creds: NULL addresses when none is. */
static void creds_sources(const estc_client *c, enum estc__creds creds, const char **cert,
                          const char **key)
{
    *cert = creds == ESTC__CREDS_ENROLLED ? c->cert_addr : c->boot_cert;
    *key = creds == ESTC__CREDS_ENROLLED ? c->key_addr : c->boot_key;
}

/* The pair kept by estc_client_check_credentials() for @cert and @key, taken
 * (the caller owns both then); false when none is kept for them. */
static bool take_checked(estc_client *c, const char *cert, const char *key, X509 **x,
                         EVP_PKEY **pkey)
{
    /* What was read is named by where it came from, whichever role the
     * session gives it (a re-enrollment's pair is both). */
    bool same = c->checked.cert_src != NULL && cert != NULL && key != NULL &&
                strcmp(c->checked.cert_src, cert) == 0 && strcmp(c->checked.key_src, key) == 0;
    if (same) {
        *x = c->checked.cert;
        *pkey = c->checked.key;
        c->checked.cert = NULL;
        c->checked.key = NULL;
    }
    estc__client_drop_checked(c);
    return same;
}

estc_err estc_client_check_credentials(estc_client *c, estc_client_creds which)
{
    if (c == NULL || (which != ESTC_CLIENT_CREDS_BOOTSTRAP && which != ESTC_CLIENT_CREDS_ENROLLED))
        return ESTC_ERR_INVALID_ARG;
    enum estc__creds creds =
        which == ESTC_CLIENT_CREDS_ENROLLED ? ESTC__CREDS_ENROLLED : ESTC__CREDS_BOOTSTRAP;
    const char *cert, *key;
    creds_sources(c, creds, &cert, &key);
    estc__client_drop_checked(c);
    if (cert == NULL || key == NULL)
        return estc_error(c->ctx, ESTC_ERR_STATE, "no %s certificate and key configured",
                          creds == ESTC__CREDS_ENROLLED ? "enrolled" : "bootstrap");
    X509 *x = NULL;
    EVP_PKEY *pkey = NULL;
    estc_err err = load_cert(c, cert, &x);
    if (err == ESTC_OK)
        err = load_key(c, key, &pkey);
    if (err == ESTC_OK && X509_check_private_key(x, pkey) != 1) {
        ERR_clear_error();
        err = estc_error(c->ctx, ESTC_ERR_CRYPTO,
                         "the key does not belong to the certificate (their public keys differ)");
    }
    if (err == ESTC_OK) {
        c->checked.cert_src = strdup(cert);
        c->checked.key_src = strdup(key);
        if (c->checked.cert_src == NULL || c->checked.key_src == NULL)
            err = ESTC_ERR_NOMEM;
    }
    if (err != ESTC_OK) {
        X509_free(x);
        EVP_PKEY_free(pkey);
        estc__client_drop_checked(c);
        return err;
    }
    c->checked.cert = x;
    c->checked.key = pkey;
    return ESTC_OK;
}

/* The transport's lines go to the context's log. */
static void transport_log(void *arg, estc_log_level level, const char *msg)
{
    estc_log(arg, level, "coap: %s", msg);
}

static estc_err open_transport(estc_client *c, enum estc__creds creds)
{
    if (c->custom_transport)
        return ESTC_OK;
    if (c->transport != NULL && c->transport_creds == creds)
        return ESTC_OK;
    estc__client_reset_transport(c);
    if (c->host == NULL)
        return estc_error(c->ctx, ESTC_ERR_STATE, "no server configured");
    /* Without bootstrap credentials the session is anonymous on the client
     * side: enough for discovery, /crts and /att where the server allows it. */
    const char *cert, *key;
    creds_sources(c, creds, &cert, &key);

    /* Credentials reach libcoap in memory: no file is written for it. */
    STACK_OF(X509) *trust = sk_X509_new_null();
    X509 *x = NULL;
    EVP_PKEY *pkey = NULL;
    char uri[600];
    estc_err err = trust != NULL ? load_trust(c, trust) : ESTC_ERR_NOMEM;
    bool checked = err == ESTC_OK && take_checked(c, cert, key, &x, &pkey);
    if (err == ESTC_OK && cert != NULL && !checked)
        err = load_cert(c, cert, &x);
    if (err == ESTC_OK && key != NULL && !checked)
        err = load_key(c, key, &pkey);
    if (err == ESTC_OK) {
        bool v6 = strchr(c->host, ':') != NULL;
        snprintf(uri, sizeof(uri), "coaps://%s%s%s:%u", v6 ? "[" : "", c->host, v6 ? "]" : "",
                 c->port);
        estc_coap_config cfg = {
            .server = uri,
            .identity = c->identity,
            .timeout_ms = c->timeout_ms,
            .block_szx = c->block_szx,
            .log_fn = transport_log,
            .log_arg = c->ctx,
            .cancel = c->cancel,
            .cancel_arg = c->cancel_arg,
        };
        estc__coap_creds creds = {
            .n_trust = (size_t)sk_X509_num(trust),
            .cert = x,
            .key = pkey,
        };
        X509 **list = malloc((creds.n_trust > 0 ? creds.n_trust : 1) * sizeof(*list));
        if (list == NULL)
            err = ESTC_ERR_NOMEM;
        for (size_t i = 0; list != NULL && i < creds.n_trust; i++)
            list[i] = sk_X509_value(trust, (int)i);
        creds.trust = list;
        if (err == ESTC_OK)
            err = estc__transport_coap_new_creds(&cfg, &creds, &c->transport);
        free(list);
        ERR_clear_error();
        if (err == ESTC_ERR_CRYPTO)
            err = estc_error(c->ctx, err, "cannot set up CoAP/DTLS to %s: the certificate does not "
                             "belong to the key",
                             uri);
        else if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "cannot set up CoAP/DTLS to %s", uri);
    }
    EVP_PKEY_free(pkey);
    X509_free(x);
    sk_X509_pop_free(trust, X509_free);
    if (err != ESTC_OK) {
        estc__client_reset_transport(c);
        return err;
    }
    c->transport_creds = creds;
    return ESTC_OK;
}

/*
 * After /crts: the server of the open session verified against the new
 * explicit trust (already in c->explicit_certs) before it is trusted, RFC
 * 7030 §4.1.3. The chain the server sent in this session's handshake is
 * checked again in memory, and the session goes on (RFC 9148 §4: one
 * handshake for /crts and /sen). Without such a session (a custom
 * transport) a fresh one is opened with only the new anchors and /crts asked
 * again. Errors as estc__client_exchange(); ESTC_ERR_VALIDATION when the
 * server does not verify against the new anchors.
 */
estc_err estc__client_recheck_server(estc_client *c, enum estc__creds creds)
{
    if (c->custom_transport || c->transport == NULL || c->transport_creds != creds) {
        estc_response resp = {0};
        estc__client_reset_transport(c);
        estc_err err = estc__client_exchange(c, creds, ESTC__EST_CRTS, ESTC_COAP_GET, ESTC_CF_NONE,
                                             c->accept, NULL, 0, &resp);
        estc_response_clear(&resp);
        return err;
    }
    STACK_OF(X509) *trust = sk_X509_new_null();
    X509 **list = NULL;
    estc_err err = trust != NULL ? load_trust(c, trust) : ESTC_ERR_NOMEM;
    size_t n = trust != NULL ? (size_t)sk_X509_num(trust) : 0;
    if (err == ESTC_OK && (list = malloc(n * sizeof(*list))) == NULL)
        err = ESTC_ERR_NOMEM;
    for (size_t i = 0; err == ESTC_OK && i < n; i++)
        list[i] = sk_X509_value(trust, (int)i);
    if (err == ESTC_OK) {
        char detail[512];
        err = estc__transport_coap_recheck(c->transport, list, n, detail, sizeof(detail));
        if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "%s", detail);
    }
    free(list);
    sk_X509_pop_free(trust, X509_free);
    return err;
}

/* ---- one exchange ------------------------------------------------------- */

static estc_err discover(estc_client *c, enum estc__creds creds);

static estc_err resource_path(estc_client *c, enum estc__creds creds, estc__est_resource res,
                              const char **path)
{
    if (c->paths[res] == NULL && c->root == NULL) {
        estc_err err = discover(c, creds);
        if (err != ESTC_OK)
            return err;
    }
    if (c->paths[res] == NULL && c->root != NULL) {
        size_t n = strlen(c->root) + 8;
        c->paths[res] = malloc(n);
        if (c->paths[res] == NULL)
            return ESTC_ERR_NOMEM;
        snprintf(c->paths[res], n, "%s/%s", c->root, estc__est_resource_name(res));
    }
    if (c->paths[res] == NULL)
        return estc_error(c->ctx, ESTC_ERR_UNSUPPORTED, "the server offers no /%s resource",
                          estc__est_resource_name(res));
    *path = c->paths[res];
    return ESTC_OK;
}

static const char *method_name(estc_coap_method m)
{
    return m == ESTC_COAP_GET ? "GET" : m == ESTC_COAP_POST ? "POST" : "?";
}

/* The server's diagnostic payload as printable text, for the detail. */
static void diagnostic(const estc_response *r, char *out, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < r->payload.len && o + 1 < n && i < 120; i++) {
        unsigned char ch = r->payload.data[i];
        out[o++] = isprint(ch) ? (char)ch : '.';
    }
    out[o] = '\0';
}

/* The tls-unique value of the open session, in base64. */
static estc_err session_pop_value(estc_client *c, char b64[ESTC__POP_B64_MAX])
{
    uint8_t raw[ESTC_TLS_UNIQUE_MAX];
    size_t n = 0;
    estc_err err = estc_transport_tls_unique(c->transport, raw, sizeof(raw), &n);
    if (err == ESTC_OK && (n == 0 || n > sizeof(raw)))
        err = ESTC_ERR_PROTOCOL;
    if (err == ESTC_OK)
        EVP_EncodeBlock((unsigned char *)b64, raw, (int)n);
    OPENSSL_cleanse(raw, sizeof(raw));
    return err;
}

estc_err estc__client_pop_value(estc_client *c, enum estc__creds creds, char b64[ESTC__POP_B64_MAX])
{
    for (unsigned lost = 0;;) {
        estc_err err = open_transport(c, creds);
        if (err != ESTC_OK)
            return err;
        err = session_pop_value(c, b64);
        if (err == ESTC_OK)
            return ESTC_OK;
        estc_err e = estc_error(c->ctx, err, "proof-of-possession: %s",
                                estc_transport_error_detail(c->transport));
        estc__client_reset_transport(c);
        if ((err != ESTC_ERR_TIMEOUT && err != ESTC_ERR_TRANSPORT) ||
            ++lost >= ESTC__MAX_LOST_EXCHANGES)
            return e;
    }
}

/* Sleeps @ms in slices of 100 ms, asking the cancel callback between them. */
static estc_err pause_ms(estc_client *c, uint64_t ms)
{
    while (ms > 0) {
        if (c->cancel != NULL && c->cancel(c->cancel_arg))
            return ESTC_ERR_CANCELLED;
        uint64_t slice = ms < 100 ? ms : 100;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)slice * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        ms -= slice;
    }
    return c->cancel != NULL && c->cancel(c->cancel_arg) ? ESTC_ERR_CANCELLED : ESTC_OK;
}

static estc_err send_path(estc_client *c, enum estc__creds creds, const char *path,
                          estc_coap_method method, int cf, int accept, const uint8_t *payload,
                          size_t len, bool pop, estc_response *resp)
{
    estc_request req = {.method = method,
                        .path = path,
                        .content_format = cf,
                        .accept = accept,
                        .payload = payload,
                        .payload_len = len};
    estc_buf bound = {0}; /* the CSR signed again for a newer session */
    unsigned lost = 0, waits = 0;
    estc_err err;
    for (;;) {
        err = open_transport(c, creds);
        if (err != ESTC_OK)
            break;
        char b64[ESTC__POP_B64_MAX];
        err = pop ? session_pop_value(c, b64) : ESTC_OK;
        if (err == ESTC_OK && pop) {
            /* RFC 7030 §3.5: the CSR names the session that carries it. */
            estc_buf csr = {.data = (uint8_t *)req.payload, .len = req.payload_len};
            estc_buf fresh = {0};
            bool changed = false;
            err = estc__csr_rebind(c, &csr, b64, &fresh, &changed);
            if (err != ESTC_OK)
                break;
            if (changed) {
                estc_buf_free(&bound);
                bound = fresh;
                req.payload = bound.data;
                req.payload_len = bound.len;
            }
        }
        if (err == ESTC_OK)
            err = estc_transport_request(c->transport, &req, resp);
        if (err != ESTC_OK) {
            estc_err e = estc_error(c->ctx, err, "%s %s: %s", method_name(method), path,
                                    estc_transport_error_detail(c->transport));
            /* A failed handshake or session is not reused. */
            estc__client_reset_transport(c);
            /* libcoap gives up a handshake after five time-outs however long
             * the exchange may take: on a lossy link try again a few times.
             * Resending is safe: a server answers the same CSR alike. */
            if ((err == ESTC_ERR_TIMEOUT || err == ESTC_ERR_TRANSPORT) &&
                ++lost < ESTC__MAX_LOST_EXCHANGES) {
                estc_log(c->ctx, ESTC_LOG_WARNING, "%s %s: no answer, trying again",
                         method_name(method), path);
                continue;
            }
            err = e;
            break;
        }
        lost = 0;
        if (resp->code / 100 == 2)
            break;
        if (resp->code != 503) {
            char diag[128];
            diagnostic(resp, diag, sizeof(diag));
            err = estc_error(c->ctx, ESTC_ERR_SERVER, "%s %s: %d.%02d%s%s", method_name(method),
                             path, resp->code / 100, resp->code % 100, diag[0] ? ": " : "", diag);
            break;
        }
        /* 5.03 + Max-Age (RFC 9148 §4.7): wait, then resend the same request. */
        uint32_t wait = resp->max_age;
        if (waits >= c->max_retries) {
            err = estc_error(c->ctx, ESTC_ERR_LIMIT,
                             "%s %s: still 5.03 Service Unavailable after %u retries",
                             method_name(method), path, waits);
            break;
        }
        waits++;
        if (wait > c->max_wait_s) {
            err = estc_error(c->ctx, ESTC_ERR_LIMIT,
                             "%s %s: 5.03 with Max-Age %u s, over the %u s allowed",
                             method_name(method), path, wait, c->max_wait_s);
            break;
        }
        /* A warning: shown at the default verbosity, as every wait longer
         * than a second should be. */
        estc_log(c->ctx, wait > 1 ? ESTC_LOG_WARNING : ESTC_LOG_INFO,
                 "%s %s: 5.03, retrying in %u s (Service Unavailable, Max-Age)",
                 method_name(method), path, wait);
        err = pause_ms(c, (uint64_t)wait * 1000);
        if (err != ESTC_OK) {
            err = estc_error(c->ctx, err, "%s %s: cancelled while waiting out a 5.03",
                             method_name(method), path);
            break;
        }
    }
    estc_buf_free(&bound);
    return err;
}

estc_err estc__client_exchange(estc_client *c, enum estc__creds creds, estc__est_resource res,
                               estc_coap_method method, int cf, int accept, const uint8_t *payload,
                               size_t len, estc_response *resp)
{
    const char *path = NULL;
    estc_err err = resource_path(c, creds, res, &path);
    if (err != ESTC_OK)
        return err;
    bool pop = c->pop && cf == ESTC__CF_PKCS10 && len > 0;
    return send_path(c, creds, path, method, cf, accept, payload, len, pop, resp);
}

estc_err estc_client_discover(estc_client *c)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    /* The enrolled credentials when they exist; else the bootstrap ones,
     * which without --cert/--key means an anonymous client. */
    enum estc__creds creds = ESTC__CREDS_BOOTSTRAP;
    bool have = false;
    if (c->boot_cert == NULL &&
        estc_object_exists(c->ctx, c->cert_addr, ESTC_OBJ_CERT, &have) == ESTC_OK && have)
        creds = ESTC__CREDS_ENROLLED;
    estc_ctx_clear_error(c->ctx);
    return discover(c, creds);
}

static estc_err discover(estc_client *c, enum estc__creds creds)
{
    estc_response resp = {0};
    estc_err err = send_path(c, creds, "/.well-known/core?rt=ace.est*", ESTC_COAP_GET, ESTC_CF_NONE,
                             ESTC__CF_LINK_FORMAT, NULL, 0, false, &resp);
    if (err != ESTC_OK) {
        estc_response_clear(&resp);
        return err;
    }
    if (resp.content_format != ESTC__CF_LINK_FORMAT) {
        estc_response_clear(&resp);
        return estc_error(c->ctx, ESTC_ERR_PROTOCOL, "discovery answered with Content-Format %d",
                          resp.content_format);
    }
    estc__discovery disc = {0};
    err = estc__codec_link_format((const char *)resp.payload.data, resp.payload.len, &disc);
    estc_response_clear(&resp);
    if (err != ESTC_OK)
        return estc_error(c->ctx, err, "discovery: malformed link-format");
    if (!disc.res[ESTC__EST_CRTS].found || !disc.res[ESTC__EST_SEN].found) {
        estc__discovery_free(&disc);
        return estc_error(c->ctx, ESTC_ERR_PROTOCOL, "discovery: no ace.est.crts or ace.est.sen");
    }
    for (int i = 0; i < ESTC__EST_COUNT && err == ESTC_OK; i++) {
        free(c->paths[i]);
        c->paths[i] = NULL;
        if (disc.res[i].found) {
            c->paths[i] = strdup(disc.res[i].path);
            if (c->paths[i] == NULL)
                err = ESTC_ERR_NOMEM;
        }
    }
    /* Absolute links (RFC 9148 §4.1): the resources live at another
     * endpoint, typically another port of the same host. */
    const estc__est_link *sen = &disc.res[ESTC__EST_SEN];
    if (err == ESTC_OK && sen->host != NULL) {
        /* All resources on that one endpoint, and the certificate there
         * must still name the host the user configured. */
        for (int i = 0; i < ESTC__EST_COUNT && err == ESTC_OK; i++) {
            const estc__est_link *l = &disc.res[i];
            if (l->found &&
                (l->host == NULL || strcasecmp(l->host, sen->host) != 0 || l->port != sen->port))
                err = estc_error(c->ctx, ESTC_ERR_PROTOCOL,
                                 "discovery: EST resources on different endpoints");
        }
        if (err == ESTC_OK && c->identity == NULL && (c->identity = strdup(c->host)) == NULL)
            err = ESTC_ERR_NOMEM;
    }
    if (err == ESTC_OK && sen->host != NULL) {
        char *h = strdup(sen->host);
        if (h == NULL)
            err = ESTC_ERR_NOMEM;
        else {
            free(c->host);
            c->host = h;
            c->port = sen->port != 0 ? sen->port : ESTC__DEFAULT_PORT;
            estc__client_reset_transport(c);
        }
    }
    estc__discovery_free(&disc);
    return err;
}
