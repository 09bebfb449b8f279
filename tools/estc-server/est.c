/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The EST-coaps resources (RFC 9148 §4): discovery, crts, sen, sren, skg, skc
 * and att, with content negotiation, client authorization, the delay mode and
 * retransmission-safe enrollment.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

enum est_op { OP_SEN, OP_SREN, OP_SKG, OP_SKC };

struct est_link {
    const char *name; /* path below the root */
    const char *rt;
    const char *ct; /* as written in link-format */
};

/* RFC 9148 §4.1 order and attributes. */
static const struct est_link est_links[] = {
    {"crts", "ace.est.crts", "\"281 287\""},
    {"sen", "ace.est.sen", "\"281 287\""},
    {"sren", "ace.est.sren", "\"281 287\""},
    {"att", "ace.est.att", "285"},
    {"skg", "ace.est.skg", "62"},
    {"skc", "ace.est.skc", "62"},
};

static struct srv *srv_of(coap_session_t *session)
{
    return coap_get_app_data(coap_session_get_context(session));
}

/* rt=VALUE or rt=PREFIX* (RFC 6690 §4.1) against one link. */
static int link_matches(const struct est_link *l, const coap_string_t *query)
{
    const char *q, *end;

    if (query == NULL || query->length == 0)
        return 1;
    q = (const char *)query->s;
    end = q + query->length;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        size_t n = amp ? (size_t)(amp - q) : (size_t)(end - q);
        if (n >= 3 && memcmp(q, "rt=", 3) == 0) {
            const char *v = q + 3;
            size_t vn = n - 3;
            if (vn > 0 && v[vn - 1] == '*') {
                if (strlen(l->rt) < vn - 1 || memcmp(l->rt, v, vn - 1) != 0)
                    return 0;
            } else if (strlen(l->rt) != vn || memcmp(l->rt, v, vn) != 0) {
                return 0;
            }
        } else if (n >= 3 && memcmp(q, "ct=", 3) == 0) {
            char want[16];
            const char *p;
            if (n - 3 >= sizeof(want))
                return 0;
            memcpy(want, q + 3, n - 3);
            want[n - 3] = '\0';
            /* a whole number inside the ct list */
            p = strstr(l->ct, want);
            if (p == NULL || (p != l->ct && p[-1] != ' ' && p[-1] != '"') ||
                (p[strlen(want)] != '\0' && p[strlen(want)] != ' ' && p[strlen(want)] != '"'))
                return 0;
        } else if (n > 0) {
            return 0; /* a filter on an attribute we do not have */
        }
        q += n + 1;
    }
    return 1;
}

static void hnd_discovery(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                          const coap_string_t *query, coap_pdu_t *response)
{
    struct srv *s = srv_of(session);
    size_t cap = 1024, used = 0, i;
    uint8_t *buf = malloc(cap);
    int accept = srv_opt_uint(request, COAP_OPTION_ACCEPT);

    if (buf == NULL) {
        srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "out of memory");
        return;
    }
    if (accept != SRV_CF_NONE && accept != SRV_CF_LINK_FORMAT) {
        free(buf);
        srv_respond_error(response, COAP_RESPONSE_CODE_NOT_ACCEPTABLE, "discovery serves 40");
        return;
    }
    for (i = 0; i < sizeof(est_links) / sizeof(est_links[0]); i++) {
        const struct est_link *l = &est_links[i];
        int n;
        if (!link_matches(l, query))
            continue;
        n = snprintf((char *)buf + used, cap - used, "%s</%s/%s>;rt=\"%s\";ct=%s", used ? "," : "",
                     s->root, l->name, l->rt, l->ct);
        if (n < 0 || (size_t)n >= cap - used) {
            free(buf);
            srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "path too long");
            return;
        }
        used += (size_t)n;
    }
    if (used == 0) {
        free(buf);
        srv_respond_error(response, COAP_RESPONSE_CODE_NOT_FOUND, "no matching resource");
        return;
    }
    srv_respond_body(s, r, session, request, query, response, COAP_RESPONSE_CODE_CONTENT,
                     SRV_CF_LINK_FORMAT, buf, used);
}

static void hnd_crts(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                     const coap_string_t *query, coap_pdu_t *response)
{
    struct srv *s = srv_of(session);
    int accept = srv_opt_uint(request, COAP_OPTION_ACCEPT);
    uint8_t *body = NULL;
    size_t len = 0;
    int rc;

    if (accept == SRV_CF_NONE)
        accept = SRV_CF_PKCS7_CERTS;
    if (accept == SRV_CF_PKCS7_CERTS)
        rc = srv_pkcs7_certs(NULL, &s->ca, 1, &body, &len);
    else if (accept == SRV_CF_PKIX_CERT)
        rc = srv_x509_der(s->ca.cert, &body, &len);
    else {
        srv_respond_error(response, COAP_RESPONSE_CODE_NOT_ACCEPTABLE,
                          "crts serves Content-Format 281 or 287");
        return;
    }
    if (rc != 0) {
        srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "encoding failed");
        return;
    }
    srv_respond_body(s, r, session, request, query, response, COAP_RESPONSE_CODE_CONTENT,
                     (unsigned)accept, body, len);
}

static void hnd_att(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                    const coap_string_t *query, coap_pdu_t *response)
{
    struct srv *s = srv_of(session);
    int accept = srv_opt_uint(request, COAP_OPTION_ACCEPT);
    uint8_t *body;

    if (accept != SRV_CF_NONE && accept != SRV_CF_CSRATTRS) {
        srv_respond_error(response, COAP_RESPONSE_CODE_NOT_ACCEPTABLE,
                          "att serves Content-Format 285");
        return;
    }
    body = malloc(s->csr_attrs_len);
    if (body == NULL) {
        srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "out of memory");
        return;
    }
    memcpy(body, s->csr_attrs, s->csr_attrs_len);
    srv_respond_body(s, r, session, request, query, response, COAP_RESPONSE_CODE_CONTENT,
                     SRV_CF_CSRATTRS, body, s->csr_attrs_len);
}

/* RFC 7030 §3.5: challengePassword = base64(tls-unique). */
static int pop_ok(coap_session_t *session, X509_REQ *req)
{
    int idx = X509_REQ_get_attr_by_NID(req, NID_pkcs9_challengePassword, -1);
    X509_ATTRIBUTE *attr;
    ASN1_TYPE *t;
    char *want;
    int ok = 0;

    if (idx < 0)
        return 0;
    attr = X509_REQ_get_attr(req, idx);
    t = attr ? X509_ATTRIBUTE_get0_type(attr, 0) : NULL;
    if (t == NULL || (t->type != V_ASN1_PRINTABLESTRING && t->type != V_ASN1_UTF8STRING &&
                      t->type != V_ASN1_IA5STRING))
        return 0;
    want = srv_tls_unique_b64(session);
    if (want != NULL) {
        const ASN1_STRING *str = t->value.asn1_string;
        ok = (size_t)ASN1_STRING_length(str) == strlen(want) &&
             CRYPTO_memcmp(ASN1_STRING_get0_data(str), want, strlen(want)) == 0;
    }
    free(want);
    return ok;
}

/* A fresh key of the CSR key's type for server-side key generation. */
static EVP_PKEY *keygen_like(EVP_PKEY *pub)
{
    if (EVP_PKEY_is_a(pub, "EC")) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_group_name(pub, group, sizeof(group), &glen) != 1)
            return NULL;
        return EVP_EC_gen(group);
    }
    if (EVP_PKEY_is_a(pub, "RSA")) {
        int bits = EVP_PKEY_get_bits(pub);
        if (bits < 2048 || bits > 4096)
            bits = 2048;
        return EVP_RSA_gen((unsigned)bits);
    }
    return NULL;
}

static int pkcs8_der(EVP_PKEY *key, uint8_t **out, size_t *out_len)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(key);
    unsigned char *der = NULL;
    int n;

    if (p8 == NULL)
        return -1;
    n = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (n <= 0)
        return -1;
    *out = malloc((size_t)n);
    if (*out == NULL) {
        OPENSSL_clear_free(der, (size_t)n);
        return -1;
    }
    memcpy(*out, der, (size_t)n);
    OPENSSL_clear_free(der, (size_t)n);
    *out_len = (size_t)n;
    return 0;
}

/* Issues the certificate (and for skg/skc the key) for a valid CSR; the
 * certificate also as an object in *issued, for the answer's encoding. */
static coap_pdu_code_t issue(struct srv *s, enum est_op op, X509_REQ *req, struct srv_answer *ans,
                             X509 **issued, const char **diag)
{
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    EVP_PKEY *gen = NULL;
    X509 *cert = NULL;
    coap_pdu_code_t code = COAP_RESPONSE_CODE_INTERNAL_ERROR;
    char subject[256];

    *diag = "certificate issuance failed";
    if (op == OP_SKG || op == OP_SKC) {
        gen = keygen_like(pub);
        if (gen == NULL) {
            *diag = "unsupported key type for server-side key generation";
            code = COAP_RESPONSE_CODE_BAD_REQUEST;
            goto out;
        }
        pub = gen;
        if (pkcs8_der(gen, &ans->pkey, &ans->pkey_len) != 0)
            goto out;
    }
    cert = srv_ca_issue(s, req, pub);
    if (cert == NULL || srv_x509_der(cert, &ans->cert, &ans->cert_len) != 0)
        goto out;
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
    srv_log(SRV_LOG_INFO, "issued a certificate to %s", subject);
    *diag = NULL;
    code = COAP_RESPONSE_CODE_CHANGED;
    *issued = cert;
    cert = NULL;
out:
    if (code != COAP_RESPONSE_CODE_CHANGED)
        srv_answer_clear(ans);
    X509_free(cert);
    EVP_PKEY_free(gen);
    return code;
}

/*
 * The response body for an answer in the negotiated format. @issued is the
 * certificate of ans->cert when it was just issued, NULL for a remembered
 * answer (then decoded from ans->cert: OpenSSL 3.0 decodes its public key
 * with it, which costs more than the signature).
 */
static int encode(struct srv *s, enum est_op op, int accept, const struct srv_answer *ans,
                  X509 *issued, uint8_t **body, size_t *len)
{
    const unsigned char *p = ans->cert;
    X509 *cert = NULL;
    uint8_t *certs = NULL;
    size_t certs_len = 0;
    int rc = -1;
    int want_pkix =
        (op == OP_SKC) || ((op == OP_SEN || op == OP_SREN) && accept == SRV_CF_PKIX_CERT);

    if (want_pkix) {
        certs = malloc(ans->cert_len);
        if (certs == NULL)
            return -1;
        memcpy(certs, ans->cert, ans->cert_len);
        certs_len = ans->cert_len;
    } else {
        if (issued == NULL)
            issued = cert = d2i_X509(NULL, &p, (long)ans->cert_len);
        if (issued == NULL || srv_pkcs7_certs(issued, &s->ca, 0, &certs, &certs_len) != 0)
            goto out;
    }
    if (op == OP_SEN || op == OP_SREN) {
        *body = certs;
        *len = certs_len;
        certs = NULL;
        rc = 0;
    } else {
        struct srv_part parts[2] = {
            {SRV_CF_PKCS8, ans->pkey, ans->pkey_len},
            {want_pkix ? SRV_CF_PKIX_CERT : SRV_CF_PKCS7_CERTS, certs, certs_len},
        };
        rc = srv_cbor_multipart(parts, 2, body, len);
    }
out:
    free(certs);
    X509_free(cert);
    return rc;
}

static const char *op_name(enum est_op op)
{
    static const char *const names[] = {"sen", "sren", "skg", "skc"};
    return names[op];
}

/* A policy refusal: logged with the client's subject, answered with the rule
 * as diagnostic (4.00 malformed, 4.03 not allowed, 4.13 with Size1 = limit). */
static void refuse(coap_pdu_t *response, enum est_op op, X509 *peer,
                   const struct srv_policy_refusal *why, enum srv_policy_verdict verdict,
                   size_t limit)
{
    char client[256];
    coap_pdu_code_t code = verdict == SRV_POLICY_TOO_LARGE   ? COAP_RESPONSE_CODE_REQUEST_TOO_LARGE
                           : verdict == SRV_POLICY_FORBIDDEN ? COAP_RESPONSE_CODE_FORBIDDEN
                                                             : COAP_RESPONSE_CODE_BAD_REQUEST;

    /* X509_NAME_oneline escapes control characters as \xHH. */
    X509_NAME_oneline(X509_get_subject_name(peer), client, sizeof(client));
    srv_log(SRV_LOG_ERR, "refused %s from %s: %s", op_name(op), client, why->diag);
    if (verdict == SRV_POLICY_TOO_LARGE) {
        uint8_t buf[4];
        coap_add_option(response, COAP_OPTION_SIZE1,
                        coap_encode_var_safe(buf, sizeof(buf), (unsigned)limit), buf);
    }
    srv_respond_error(response, code, why->diag);
}

static void handle_enroll(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                          const coap_string_t *query, coap_pdu_t *response, enum est_op op)
{
    struct srv *s = srv_of(session);
    int cf = srv_opt_uint(request, COAP_OPTION_CONTENT_FORMAT);
    int accept = srv_opt_uint(request, COAP_OPTION_ACCEPT);
    int keygen = op == OP_SKG || op == OP_SKC;
    const uint8_t *data = NULL;
    size_t len = 0, offset = 0, total = 0;
    const unsigned char *p;
    X509_REQ *req = NULL;
    X509 *peer = NULL;
    uint8_t id[32], key[32];
    uint8_t *body = NULL;
    size_t body_len = 0;
    struct srv_answer ans = {NULL, 0, NULL, 0};
    X509 *issued = NULL;
    const char *diag = NULL;
    coap_pdu_code_t code;
    unsigned out_cf = keygen ? SRV_CF_MULTIPART : 0;
    struct srv_policy_refusal why;
    enum srv_policy_verdict verdict;

    /* Who is asking: enrollment needs a client certificate we trust. */
    peer = srv_tls_peer_cert(session);
    if (peer == NULL) {
        srv_respond_error(response, COAP_RESPONSE_CODE_UNAUTHORIZED, "client certificate required");
        return;
    }
    if (!srv_tls_peer_verified(session, s->client_store)) {
        srv_respond_error(response, COAP_RESPONSE_CODE_UNAUTHORIZED,
                          "client certificate not trusted");
        goto out;
    }
    if (op == OP_SREN && !srv_tls_peer_verified(session, s->own_store)) {
        srv_respond_error(response, COAP_RESPONSE_CODE_FORBIDDEN,
                          "sren needs a certificate issued by this CA");
        goto out;
    }

    if (cf != SRV_CF_PKCS10) {
        srv_respond_error(response, COAP_RESPONSE_CODE_UNSUPPORTED_CONTENT_FORMAT,
                          "expected Content-Format 286 (PKCS#10)");
        goto out;
    }
    if (accept == SRV_CF_NONE)
        accept = keygen ? SRV_CF_MULTIPART : SRV_CF_PKCS7_CERTS;
    if (keygen ? accept != SRV_CF_MULTIPART
               : (accept != SRV_CF_PKCS7_CERTS && accept != SRV_CF_PKIX_CERT)) {
        srv_respond_error(response, COAP_RESPONSE_CODE_NOT_ACCEPTABLE,
                          keygen ? "serves Content-Format 62" : "serves Content-Format 281 or 287");
        goto out;
    }
    if (!coap_get_data_large(request, &len, &data, &offset, &total) || len == 0 || offset != 0 ||
        len != total) {
        srv_respond_error(response, COAP_RESPONSE_CODE_BAD_REQUEST, "empty or partial CSR");
        goto out;
    }
    if (srv_policy_check_size(&s->opt.policy, len, &why) != SRV_POLICY_OK) {
        refuse(response, op, peer, &why, SRV_POLICY_TOO_LARGE, s->opt.policy.max_csr_size);
        goto out;
    }

    p = data;
    req = d2i_X509_REQ(NULL, &p, (long)len);
    if (req == NULL || p != data + len) {
        srv_respond_error(response, COAP_RESPONSE_CODE_BAD_REQUEST, "CSR is not DER PKCS#10");
        goto out;
    }
    if (X509_REQ_get0_pubkey(req) == NULL || X509_REQ_verify(req, X509_REQ_get0_pubkey(req)) != 1) {
        srv_respond_error(response, COAP_RESPONSE_CODE_BAD_REQUEST,
                          "CSR signature does not verify");
        goto out;
    }
    if (s->opt.pop && !pop_ok(session, req)) {
        srv_respond_error(response, COAP_RESPONSE_CODE_BAD_REQUEST,
                          "challengePassword is not the tls-unique value");
        goto out;
    }
    verdict = srv_policy_check_csr(&s->opt.policy, req, peer, op == OP_SREN, &why);
    if (verdict != SRV_POLICY_OK) {
        refuse(response, op, peer, &why, verdict, 0);
        goto out;
    }
    if (op == OP_SREN && !srv_policy_same_identity(peer, req)) {
        srv_log(SRV_LOG_ERR, "refused sren: the CSR changes the Subject or SubjectAltName");
        srv_respond_error(response, COAP_RESPONSE_CODE_FORBIDDEN,
                          "sren must keep Subject and SubjectAltName");
        goto out;
    }

    /* A retransmitted request gets the answer it got before. */
    srv_tls_client_id(session, id);
    {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned int kl = 32;
        uint8_t tag[1] = {(uint8_t)op};
        int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
                 EVP_DigestUpdate(md, id, sizeof(id)) == 1 &&
                 EVP_DigestUpdate(md, tag, sizeof(tag)) == 1 &&
                 EVP_DigestUpdate(md, data, len) == 1 && EVP_DigestFinal_ex(md, key, &kl) == 1;
        EVP_MD_CTX_free(md);
        if (!ok) {
            srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "hash failed");
            goto out;
        }
    }
    if (!keygen)
        out_cf = (unsigned)accept;
    if (srv_cache_lookup(s->cache, key, s->opt.dedup_window, &ans)) {
        srv_log(SRV_LOG_INFO, "repeated request: same certificate as before");
        goto respond;
    }

    if (srv_cache_should_delay(s->cache, id, session, coap_pdu_get_mid(request),
                               s->opt.delay_first)) {
        uint8_t buf[4];
        coap_pdu_set_code(response, COAP_RESPONSE_CODE_SERVICE_UNAVAILABLE);
        coap_add_option(response, COAP_OPTION_MAXAGE,
                        coap_encode_var_safe(buf, sizeof(buf), s->opt.max_age), buf);
        srv_log(SRV_LOG_INFO, "delay mode: 5.03, Max-Age %u", s->opt.max_age);
        goto out;
    }

    code = issue(s, op, req, &ans, &issued, &diag);
    if (code != COAP_RESPONSE_CODE_CHANGED) {
        srv_respond_error(response, code, diag);
        goto out;
    }
    if (srv_cache_store(s->cache, key, &ans) != 0)
        srv_log(SRV_LOG_ERR, "cannot remember the answer for retransmissions");
respond:
    if (encode(s, op, accept, &ans, issued, &body, &body_len) != 0) {
        srv_respond_error(response, COAP_RESPONSE_CODE_INTERNAL_ERROR, "encoding failed");
        goto out;
    }
    srv_respond_body(s, r, session, request, query, response, COAP_RESPONSE_CODE_CHANGED, out_cf,
                     body, body_len);
out:
    srv_answer_clear(&ans);
    X509_free(issued);
    ERR_clear_error();
    X509_REQ_free(req);
    X509_free(peer);
}

static void hnd_sen(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                    const coap_string_t *query, coap_pdu_t *response)
{
    handle_enroll(r, session, request, query, response, OP_SEN);
}

static void hnd_sren(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                     const coap_string_t *query, coap_pdu_t *response)
{
    handle_enroll(r, session, request, query, response, OP_SREN);
}

static void hnd_skg(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                    const coap_string_t *query, coap_pdu_t *response)
{
    handle_enroll(r, session, request, query, response, OP_SKG);
}

static void hnd_skc(coap_resource_t *r, coap_session_t *session, const coap_pdu_t *request,
                    const coap_string_t *query, coap_pdu_t *response)
{
    handle_enroll(r, session, request, query, response, OP_SKC);
}

static int add(coap_context_t *ctx, const char *path, coap_request_t method,
               coap_method_handler_t h, enum srv_auth auth)
{
    coap_str_const_t *uri = coap_new_str_const((const uint8_t *)path, strlen(path));
    coap_resource_t *r;

    if (uri == NULL)
        return -1;
    r = coap_resource_init(uri, COAP_RESOURCE_FLAGS_RELEASE_URI);
    if (r == NULL) {
        coap_delete_str_const(uri);
        return -1;
    }
    /* The context owns the resource from here, also when the handler fails. */
    coap_add_resource(ctx, r);
    return srv_register_handler(r, method, h, auth);
}

/* The policy refuses the server's own names: read them from its certificate
 * (the first one of the chain file it sends). */
int srv_est_prepare(struct srv *s)
{
    BIO *b = BIO_new_file(s->server_cert_path, "r");
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    int rc = x != NULL ? srv_policy_set_server(&s->opt.policy, x) : -1;

    if (rc != 0)
        srv_log(SRV_LOG_ERR, "cannot read the server certificate %s for the enrollment policy",
                s->server_cert_path);
    X509_free(x);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

int srv_est_register(struct srv *s, coap_context_t *ctx)
{
    static const struct {
        const char *name;
        coap_request_t method;
        coap_method_handler_t h;
        enum srv_auth auth; /* who may send a body (checked at its first block) */
    } res[] = {
        {"crts", COAP_REQUEST_GET, hnd_crts, SRV_AUTH_NONE},
        {"sen", COAP_REQUEST_POST, hnd_sen, SRV_AUTH_CLIENT},
        {"sren", COAP_REQUEST_POST, hnd_sren, SRV_AUTH_OWN},
        {"att", COAP_REQUEST_GET, hnd_att, SRV_AUTH_NONE},
        {"skg", COAP_REQUEST_POST, hnd_skg, SRV_AUTH_CLIENT},
        {"skc", COAP_REQUEST_POST, hnd_skc, SRV_AUTH_CLIENT},
    };
    size_t i;

    if (add(ctx, ".well-known/core", COAP_REQUEST_GET, hnd_discovery, SRV_AUTH_NONE) != 0)
        return -1;
    for (i = 0; i < sizeof(res) / sizeof(res[0]); i++) {
        char path[512];
        int n = snprintf(path, sizeof(path), "%s/%s", s->root, res[i].name);
        if (n < 0 || (size_t)n >= sizeof(path))
            return -1;
        if (add(ctx, path, res[i].method, res[i].h, res[i].auth) != 0)
            return -1;
    }
    return 0;
}
