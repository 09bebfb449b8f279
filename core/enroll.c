/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The EST operations: /crts, /sen, /sren, /skg and /att. Each follows one
 * pattern: create what is new as PENDING in the lifecycle record, talk to
 * the server, validate everything it sent, then commit (which removes what
 * the new objects supersede) — or roll back, leaving the engines as they
 * were.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509v3.h>

#include "client_internal.h"

/* The state of @addr in the lifecycle record, 0 when it is not there. */
static estc_obj_state record_state(estc_client *c, const char *addr)
{
    for (size_t i = 0; i < estc_lifecycle_count(c->lc); i++) {
        const char *a;
        estc_obj_state st;
        if (estc_lifecycle_get(c->lc, i, &a, NULL, &st, NULL) == ESTC_OK && strcmp(a, addr) == 0)
            return st;
    }
    return (estc_obj_state)0;
}

static bool recorded(estc_client *c, const char *addr)
{
    return record_state(c, addr) == ESTC_OBJ_COMMITTED;
}

static estc_err exists(estc_client *c, const char *addr, estc_obj_kind kind, bool *found)
{
    return estc_object_exists(c->ctx, addr, kind, found);
}

/* @base when nothing is there, else a generated address under @base. */
static estc_err free_address(estc_client *c, const char *base, estc_obj_kind kind,
                             const estc_buf *der, char **out)
{
    bool taken = false;
    estc_err err = exists(c, base, kind, &taken);
    if (err != ESTC_OK)
        return err;
    if (!taken) {
        *out = strdup(base);
        return *out != NULL ? ESTC_OK : ESTC_ERR_NOMEM;
    }
    const uint8_t *bytes = der != NULL ? der->data : NULL;
    size_t len = der != NULL ? der->len : 0;
    /* Engines whose object addresses are prefixes too (mem:, file:,
     * pkcs11: labels) place the new object beside the old one, under the
     * base without a name generated before (else every rekey of a key at
     * a generated address would append one more name). Others name
     * objects by number (tpm2:, psa:): their bare scheme, with the old
     * address's query part (TCTI and the like), is the prefix. */
    char *stable = NULL;
    err = estc__stable_base(c, base, kind, &stable);
    if (err != ESTC_OK)
        return err;
    err = estc_address_generate(c->ctx, stable, kind, bytes, len, out);
    free(stable);
    if (err != ESTC_ERR_BAD_ADDRESS)
        return err;
    const char *colon = strchr(base, ':');
    const char *query = strchr(base, '?');
    size_t n = (size_t)(colon - base) + 1 + (query != NULL ? strlen(query) : 0) + 1;
    char *prefix = malloc(n);
    if (prefix == NULL)
        return ESTC_ERR_NOMEM;
    snprintf(prefix, n, "%.*s%s", (int)(colon - base + 1), base, query != NULL ? query : "");
    estc_ctx_clear_error(c->ctx);
    err = estc_address_generate(c->ctx, prefix, kind, bytes, len, out);
    free(prefix);
    return err;
}

static enum estc__creds best_creds(estc_client *c)
{
    bool have = false;
    if (c->boot_cert != NULL)
        return ESTC__CREDS_BOOTSTRAP;
    if (exists(c, c->cert_addr, ESTC_OBJ_CERT, &have) == ESTC_OK && have)
        return ESTC__CREDS_ENROLLED;
    estc_ctx_clear_error(c->ctx);
    return ESTC__CREDS_BOOTSTRAP;
}

/* Each certificate the codec parsed, into the client's memo. */
static void keep_parsed(void *arg, const estc_buf *der, X509 *x)
{
    estc__x509_remember(arg, der, x);
}

/* Certificates from a 2.xx answer, by its Content-Format. */
static estc_err certs_of(estc_client *c, const estc_response *r, const char *what,
                         estc__der_list *certs)
{
    estc_err err = estc__codec_certs_keep(r->content_format, r->payload.data, r->payload.len,
                                          certs, keep_parsed, c);
    if (err == ESTC_ERR_PROTOCOL)
        return estc_error(c->ctx, err, "%s: answered with Content-Format %d, not 281 or 287", what,
                          r->content_format);
    if (err != ESTC_OK)
        return estc_error(c->ctx, err, "%s: the certificates do not parse", what);
    return ESTC_OK;
}

/* Which session will carry this CSR: /sen and /skg sign the configured
 * subject and go with the bootstrap credentials; a CSR for another subject
 * can only be /sren's. A /sren CSR for the configured subject is guessed
 * wrong, and estc__csr_rebind() signs it again for the right session. */
static enum estc__creds pop_creds(estc_client *c, const X509_NAME *subject)
{
    X509_NAME *conf = NULL;
    enum estc__creds creds = ESTC__CREDS_ENROLLED;
    if (c->subject != NULL && estc__parse_subject(c, c->subject, &conf) == ESTC_OK &&
        X509_NAME_cmp(conf, subject) == 0)
        creds = ESTC__CREDS_BOOTSTRAP;
    X509_NAME_free(conf);
    estc_ctx_clear_error(c->ctx);
    return creds;
}

/* The CSR for the key at @key. With proof-of-possession it first completes
 * the handshake of the session the request will most likely go on and
 * carries its tls-unique value. */
static estc_err build_csr(estc_client *c, const char *key, const estc_buf *made,
                          const X509_NAME *subject, const GENERAL_NAMES *sans, estc_buf *der)
{
    char b64[ESTC__POP_B64_MAX] = "";
    /* A failed handshake here is not the end: the exchange binds the CSR to
     * whatever session it does get (estc__csr_rebind()). */
    if (c->pop && estc__client_pop_value(c, pop_creds(c, subject), b64) != ESTC_OK) {
        estc_log(c->ctx, ESTC_LOG_WARNING,
                 "proof-of-possession: no session yet (%s); binding the CSR later",
                 estc_ctx_error_detail(c->ctx));
        estc_ctx_clear_error(c->ctx);
        b64[0] = '\0';
    }
    return estc__csr_build(c, key, made, subject, sans, b64, der);
}

/* ---- /crts ---------------------------------------------------------------- */

static estc_err cacerts_op(estc_client *c)
{
    enum estc__creds creds = best_creds(c);
    estc_response resp = {0};
    estc__der_list certs = {0};
    estc_err err = estc__client_exchange(c, creds, ESTC__EST_CRTS, ESTC_COAP_GET, ESTC_CF_NONE,
                                         c->accept, NULL, 0, &resp);
    if (err == ESTC_OK)
        err = certs_of(c, &resp, "GET /crts", &certs);
    estc_response_clear(&resp);
    if (err != ESTC_OK)
        return err;

    /* Re-validate the server against the new explicit set before trusting
     * it (RFC 7030 §4.1.3): the chain it sent in this session's handshake,
     * checked again in memory; the session then carries on. */
    estc__der_list old = c->explicit_certs;
    bool had_explicit = c->have_explicit;
    c->explicit_certs = certs;
    c->have_explicit = true;
    err = estc__client_recheck_server(c, creds);
    if (err != ESTC_OK) {
        /* Copy the detail first: estc_error() writes into the same buffer. */
        char why[512];
        snprintf(why, sizeof(why), "%s", estc_ctx_error_detail(c->ctx));
        estc_err e =
            err == ESTC_ERR_VALIDATION
                ? estc_error(c->ctx, err,
                             "the server does not verify against the CA certificates it "
                             "sent (%s)",
                             why)
                : estc_error(c->ctx, err,
                             "re-checking the server against the new CA certificates: %s", why);
        c->explicit_certs = old;
        c->have_explicit = had_explicit;
        estc__client_reset_transport(c);
        estc__der_list_free(&certs);
        return e;
    }

    /* Store each certificate at its generated address (the same CA keeps
     * its address across runs); those no longer sent are superseded. */
    char **addrs = calloc(certs.n, sizeof(*addrs));
    err = addrs == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    for (size_t i = 0; i < certs.n && err == ESTC_OK; i++) {
        err = estc_address_generate(c->ctx, c->ca_prefix, ESTC_OBJ_TRUST, certs.items[i].data,
                                    certs.items[i].len, &addrs[i]);
        bool there = false;
        if (err == ESTC_OK)
            err = exists(c, addrs[i], ESTC_OBJ_TRUST, &there);
        if (err == ESTC_OK && there) {
            /* Already stored: it must be this very certificate, and not one
             * waiting for removal. */
            estc_buf have = {0};
            err = estc_cert_load(c->ctx, addrs[i], &have);
            if (err == ESTC_OK && (have.len != certs.items[i].len ||
                                   memcmp(have.data, certs.items[i].data, have.len) != 0))
                err = estc_error(c->ctx, ESTC_ERR_EXISTS, "%s holds another certificate", addrs[i]);
            estc_buf_free(&have);
            if (err == ESTC_OK && record_state(c, addrs[i]) == ESTC_OBJ_SUPERSEDED)
                err = estc_error(c->ctx, ESTC_ERR_STATE,
                                 "%s is still waiting for removal; try again", addrs[i]);
        }
        if (err == ESTC_OK && !there)
            err = estc__journal_intent(c, addrs[i], ESTC_OBJ_TRUST, NULL);
        if (err == ESTC_OK && !there)
            err = estc_lifecycle_cert_store(c->lc, addrs[i], ESTC_OBJ_TRUST, certs.items[i].data,
                                            certs.items[i].len);
    }
    for (size_t j = 0; j < c->n_ca_addrs && err == ESTC_OK; j++) {
        bool kept = false;
        for (size_t i = 0; i < certs.n; i++)
            kept = kept || strcmp(addrs[i], c->ca_addrs[j]) == 0;
        if (!kept && recorded(c, c->ca_addrs[j]))
            err = estc_lifecycle_supersede(c->lc, c->ca_addrs[j]);
    }
    if (err == ESTC_OK)
        err = estc__journal_commit(c, NULL, NULL, NULL, addrs, &certs);
    if (err != ESTC_OK) {
        estc_err keep = err;
        estc_lifecycle_rollback(c->lc);
        c->explicit_certs = old;
        c->have_explicit = had_explicit;
        estc__client_reset_transport(c);
        for (size_t i = 0; addrs != NULL && i < certs.n; i++)
            free(addrs[i]);
        free(addrs);
        estc__der_list_free(&certs);
        return keep;
    }
    /* From here the new set is committed, whatever the removals give: an
     * object that cannot be removed now stays SUPERSEDED for the next try. */
    if (estc_lifecycle_commit(c->lc) != ESTC_OK)
        estc_log(c->ctx, ESTC_LOG_WARNING,
                 "/crts: a replaced CA certificate could not be removed yet: %s",
                 estc_ctx_error_detail(c->ctx));
    estc__der_list_free(&old);
    for (size_t j = 0; j < c->n_ca_addrs; j++)
        free(c->ca_addrs[j]);
    free(c->ca_addrs);
    c->ca_addrs = addrs;
    c->n_ca_addrs = certs.n;
    estc_log(c->ctx, ESTC_LOG_INFO, "/crts: %zu CA certificate(s) in the explicit trust store",
             certs.n);
    return ESTC_OK;
}

/* ---- shared tail of /sen, /sren, /skg -------------------------------------- */

/*
 * Validates the certificates of a 2.04 answer against the key at @key and
 * stores the issued one; then supersedes what it replaces and commits.
 * Rolls back on any failure. @key_spki: the key's public part when read
 * already, else NULL. @old and @old_der: the enrolled certificate for /sren
 * (its DER, already read), else NULL. A NULL @key: the CSR was made
 * elsewhere for the public key @csr_spki; the enrolled key stays.
 */
static estc_err finish(estc_client *c, const estc_response *r, const char *what, const char *key,
                       const estc_buf *key_spki, const estc_buf *csr_spki, X509 *old,
                       const estc_buf *old_der)
{
    estc__der_list certs = {0};
    estc_buf spki = {0};
    char *cert = NULL;
    size_t leaf = 0;
    estc_err err = certs_of(c, r, what, &certs);
    /* The public key as read from the engine when the key was made, else
     * read now (an engine may need a whole private key read for it). */
    if (err == ESTC_OK && key == NULL)
        err = estc_buf_set(&spki, csr_spki->data, csr_spki->len);
    else if (err == ESTC_OK && key_spki != NULL && key_spki->len > 0)
        err = estc_buf_set(&spki, key_spki->data, key_spki->len);
    else if (err == ESTC_OK)
        err = estc_key_public(c->ctx, key, &spki);
    if (err == ESTC_OK)
        err = estc__validate_issued(c, &certs, &spki, old, &leaf);
    if (err == ESTC_OK)
        err = free_address(c, c->cert_base, ESTC_OBJ_CERT, &certs.items[leaf], &cert);
    if (err == ESTC_OK)
        err = estc__journal_intent(c, cert, ESTC_OBJ_CERT, old_der);
    if (err == ESTC_OK)
        err = estc_lifecycle_cert_store(c->lc, cert, ESTC_OBJ_CERT, certs.items[leaf].data,
                                        certs.items[leaf].len);
    /* What the new objects replace goes at the commit, not before. */
    if (err == ESTC_OK && strcmp(cert, c->cert_addr) != 0 && recorded(c, c->cert_addr))
        err = estc_lifecycle_supersede(c->lc, c->cert_addr);
    if (err == ESTC_OK && key != NULL && strcmp(key, c->key_addr) != 0 && recorded(c, c->key_addr))
        err = estc_lifecycle_supersede(c->lc, c->key_addr);
    /* Everything that can fail goes before the commit. */
    char *new_key = NULL;
    if (err == ESTC_OK && key != NULL && (new_key = strdup(key)) == NULL)
        err = ESTC_ERR_NOMEM;
    if (err == ESTC_OK)
        err = estc__journal_commit(c, cert, &certs.items[leaf], key, NULL, NULL);
    if (err != ESTC_OK) {
        estc_err keep = err;
        estc_lifecycle_rollback(c->lc);
        free(new_key);
        err = keep;
    } else {
        /* The new objects are committed whatever the removals give: one
         * that cannot be removed now stays SUPERSEDED for the next commit. */
        if (estc_lifecycle_commit(c->lc) != ESTC_OK)
            estc_log(c->ctx, ESTC_LOG_WARNING, "%s: a replaced object could not be removed yet: %s",
                     what, estc_ctx_error_detail(c->ctx));
        c->held_cert = NULL; /* it was the replaced certificate */
        free(c->cert_addr);
        c->cert_addr = cert;
        cert = NULL;
        if (new_key != NULL) {
            free(c->key_addr);
            c->key_addr = new_key;
        }
        /* The new certificate begins its provisioning period now. */
        /* Parsed by the validation above: taken from the client's memo. */
        struct estc__cert_view cv;
        X509 *x = estc__x509_cached(c, &certs.items[leaf]);
        if (estc__cert_view_of(&certs.items[leaf], x, &cv) != ESTC_OK)
            cv = (struct estc__cert_view){0};
        X509_free(x);
        estc__provisioned(c, &cv, estc_client_now(c));
        /* The next /sren handshakes with the new credentials. */
        estc__client_reset_transport(c);
        if (key != NULL)
            estc_log(c->ctx, ESTC_LOG_INFO, "%s: certificate stored at %s, key at %s", what,
                     c->cert_addr, c->key_addr);
        else
            estc_log(c->ctx, ESTC_LOG_INFO,
                     "%s: certificate stored at %s, for the key of the CSR made elsewhere", what,
                     c->cert_addr);
    }
    free(cert);
    estc_buf_free(&spki);
    estc__der_list_free(&certs);
    return err;
}

/* ---- /sen ------------------------------------------------------------------- */

static estc_err enroll_op(estc_client *c)
{
    if (c->subject == NULL)
        return estc_error(c->ctx, ESTC_ERR_STATE, "enroll: no subject configured");
    X509_NAME *subject = NULL;
    GENERAL_NAMES *sans = NULL;
    char *key = NULL;
    bool key_is_new = false;
    estc_buf csr = {0}, made = {0};
    estc_response resp = {0};
    estc_err err = estc__parse_subject(c, c->subject, &subject);
    if (err == ESTC_OK)
        err = estc__parse_sans(c, &sans);

    /* A key already at the configured address that estc did not make is a
     * provisioned key: enroll it. Otherwise make a new one. */
    bool there = false;
    if (err == ESTC_OK)
        err = exists(c, c->key_base, ESTC_OBJ_KEY, &there);
    if (err == ESTC_OK && there && record_state(c, c->key_base) == 0) {
        key = strdup(c->key_base);
        err = key == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    } else if (err == ESTC_OK) {
        err = free_address(c, c->key_base, ESTC_OBJ_KEY, NULL, &key);
        if (err == ESTC_OK)
            err = estc__journal_intent(c, key, ESTC_OBJ_KEY, NULL);
        if (err == ESTC_OK)
            err = estc_lifecycle_key_generate(c->lc, key, c->key_type);
        key_is_new = err == ESTC_OK;
        /* The public half as made: the CSR must carry this one. */
        if (err == ESTC_OK)
            err = estc_key_public(c->ctx, key, &made);
    }
    if (err == ESTC_OK)
        err = build_csr(c, key, key_is_new ? &made : NULL, subject, sans, &csr);
    if (err == ESTC_OK)
        err = estc__client_exchange(c, ESTC__CREDS_BOOTSTRAP, ESTC__EST_SEN, ESTC_COAP_POST,
                                    ESTC__CF_PKCS10, c->accept, csr.data, csr.len, &resp);
    if (err == ESTC_OK)
        err = finish(c, &resp, "POST /sen", key, &made, NULL, NULL, NULL);
    else if (key_is_new) {
        estc_err keep = err;
        estc_lifecycle_rollback(c->lc);
        err = keep;
    }
    estc_response_clear(&resp);
    estc_buf_free(&csr);
    estc_buf_free(&made);
    free(key);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(subject);
    return err;
}

/* ---- /sren ------------------------------------------------------------------ */

/* @held: the enrolled certificate's DER when the caller has read it, else
 * NULL. Read once, it serves the DTLS session, the CSR and the journal. */
static estc_err reenroll_op(estc_client *c, bool rekey, const estc_buf *held)
{
    estc_buf loaded = {0};
    const estc_buf *der = held;
    if (der == NULL) {
        if (estc_cert_load(c->ctx, c->cert_addr, &loaded) != ESTC_OK)
            return estc_error(c->ctx, ESTC_ERR_STATE, "reenroll: no certificate at %s",
                              c->cert_addr);
        der = &loaded;
    }
    const unsigned char *p = der->data;
    X509 *old = d2i_X509(NULL, &p, (long)der->len);
    if (old == NULL) {
        estc_buf_free(&loaded);
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "%s: not a certificate", c->cert_addr);
    }

    /* The same Subject and subjectAltName as now (RFC 7030 §4.2.2). */
    GENERAL_NAMES *sans = X509_get_ext_d2i(old, NID_subject_alt_name, NULL, NULL);
    char *key = NULL;
    estc_buf csr = {0};
    estc_response resp = {0};
    estc_err err;
    c->held_cert = der;
    if (rekey) {
        err = free_address(c, c->key_base, ESTC_OBJ_KEY, NULL, &key);
        if (err == ESTC_OK)
            err = estc__journal_intent(c, key, ESTC_OBJ_KEY, der);
        if (err == ESTC_OK)
            err = estc_lifecycle_key_generate(c->lc, key, c->key_type);
    } else {
        key = strdup(c->key_addr);
        err = key == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    }
    bool made_key = rekey && err == ESTC_OK;
    estc_buf made = {0};
    if (made_key)
        err = estc_key_public(c->ctx, key, &made);
    if (err == ESTC_OK)
        err = build_csr(c, key, made_key ? &made : NULL, X509_get_subject_name(old), sans, &csr);
    if (err == ESTC_OK)
        err = estc__client_exchange(c, ESTC__CREDS_ENROLLED, ESTC__EST_SREN, ESTC_COAP_POST,
                                    ESTC__CF_PKCS10, c->accept, csr.data, csr.len, &resp);
    if (err == ESTC_OK)
        err = finish(c, &resp, "POST /sren", key, made_key ? &made : NULL, NULL, old, der);
    else if (made_key) {
        estc_err keep = err;
        estc_lifecycle_rollback(c->lc);
        err = keep;
    }
    estc_buf_free(&made);
    c->held_cert = NULL;
    estc_response_clear(&resp);
    estc_buf_free(&csr);
    free(key);
    GENERAL_NAMES_free(sans);
    X509_free(old);
    estc_buf_free(&loaded);
    return err;
}

/* ---- CSRs made elsewhere ----------------------------------------------------- */

/* /sen or /sren (@renew) with the request @data made elsewhere: no key is
 * made or touched; the issued certificate must be for the CSR's key. */
static estc_err external_csr_op(estc_client *c, const void *data, size_t len, bool renew)
{
    const char *what = renew ? "POST /sren" : "POST /sen";
    if (data == NULL)
        return estc_error(c->ctx, ESTC_ERR_INVALID_ARG, "%s: no CSR", what);
    if (c->pop)
        return estc_error(c->ctx, ESTC_ERR_UNSUPPORTED,
                          "%s: proof-of-possession binds the CSR to the DTLS session, and a CSR "
                          "made elsewhere cannot be signed again for it",
                          what);
    estc_buf csr = {0}, spki = {0}, loaded = {0};
    estc_response resp = {0};
    X509 *old = NULL;
    estc_err err = estc__csr_parse(c, data, len, &csr, &spki);
    if (err == ESTC_OK && renew) {
        if (estc_cert_load(c->ctx, c->cert_addr, &loaded) != ESTC_OK) {
            err =
                estc_error(c->ctx, ESTC_ERR_STATE, "reenroll: no certificate at %s", c->cert_addr);
        } else {
            const unsigned char *p = loaded.data;
            old = d2i_X509(NULL, &p, (long)loaded.len);
            if (old == NULL)
                err = estc_error(c->ctx, ESTC_ERR_FORMAT, "%s: not a certificate", c->cert_addr);
        }
        c->held_cert = err == ESTC_OK ? &loaded : NULL;
    }
    if (err == ESTC_OK)
        err = estc__client_exchange(c, renew ? ESTC__CREDS_ENROLLED : ESTC__CREDS_BOOTSTRAP,
                                    renew ? ESTC__EST_SREN : ESTC__EST_SEN, ESTC_COAP_POST,
                                    ESTC__CF_PKCS10, c->accept, csr.data, csr.len, &resp);
    if (err == ESTC_OK)
        err = finish(c, &resp, what, NULL, NULL, &spki, old, renew ? &loaded : NULL);
    c->held_cert = NULL;
    estc_response_clear(&resp);
    X509_free(old);
    estc_buf_free(&loaded);
    estc_buf_free(&spki);
    estc_buf_free(&csr);
    return err;
}

estc_err estc_client_check_csr(estc_client *c, const void *csr, size_t len, estc_buf *der)
{
    if (c == NULL || csr == NULL)
        return ESTC_ERR_INVALID_ARG;
    return estc__csr_parse(c, csr, len, der, NULL);
}

estc_err estc_client_make_csr(estc_client *c, const char *key_addr, estc_buf *der)
{
    if (c == NULL || key_addr == NULL || der == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (c->subject == NULL)
        return estc_error(c->ctx, ESTC_ERR_STATE, "make CSR: no subject configured");
    /* The Subject, subjectAltName and /att hints of enroll_op(). */
    X509_NAME *subject = NULL;
    GENERAL_NAMES *sans = NULL;
    estc_err err = estc__parse_subject(c, c->subject, &subject);
    if (err == ESTC_OK)
        err = estc__parse_sans(c, &sans);
    if (err == ESTC_OK)
        err = estc__csr_build(c, key_addr, NULL, subject, sans, NULL, der);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(subject);
    return err;
}

/* ---- /skg ------------------------------------------------------------------- */

static estc_err serverkeygen_op(estc_client *c)
{
    if (c->subject == NULL)
        return estc_error(c->ctx, ESTC_ERR_STATE, "serverkeygen: no subject configured");
    X509_NAME *subject = NULL;
    GENERAL_NAMES *sans = NULL;
    char *temp = NULL, *key = NULL;
    estc_buf csr = {0};
    estc_response resp = {0};
    estc__multipart mp = {0};
    estc_err err = estc__parse_subject(c, c->subject, &subject);
    if (err == ESTC_OK)
        err = estc__parse_sans(c, &sans);
    /* The request must be signed, but the server makes the key: sign it
     * with a throw-away key in process memory. */
    const struct estc_driver *volatile_drv = NULL;
    char volatile_prefix[ESTC_SCHEME_MAX + 2] = "";
    if (err == ESTC_OK)
        err = estc_engine_find_cap(c->ctx, ESTC_CAP_VOLATILE, &volatile_drv);
    if (err == ESTC_OK) {
        snprintf(volatile_prefix, sizeof(volatile_prefix), "%s:", volatile_drv->scheme);
        err = estc_address_generate(c->ctx, volatile_prefix, ESTC_OBJ_KEY, NULL, 0, &temp);
    }
    if (err == ESTC_OK)
        err = estc_key_generate(c->ctx, temp, ESTC_KEY_EC_P256);
    if (err == ESTC_OK) {
        err = build_csr(c, temp, NULL, subject, sans, &csr);
        estc_key_remove(c->ctx, temp);
    }
    if (err == ESTC_OK)
        err = estc__client_exchange(c, ESTC__CREDS_BOOTSTRAP, ESTC__EST_SKG, ESTC_COAP_POST,
                                    ESTC__CF_PKCS10, ESTC__CF_MULTIPART_CORE, csr.data, csr.len,
                                    &resp);
    if (err == ESTC_OK && resp.content_format != ESTC__CF_MULTIPART_CORE)
        err = estc_error(c->ctx, ESTC_ERR_PROTOCOL,
                         "POST /skg: answered with Content-Format %d, not 62", resp.content_format);
    if (err == ESTC_OK) {
        err = estc__codec_multipart(resp.payload.data, resp.payload.len, &mp);
        if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "POST /skg: malformed multipart-core");
    }
    const estc__multipart_part *kp = NULL, *cp = NULL;
    if (err == ESTC_OK) {
        kp = estc__multipart_find(&mp, ESTC__CF_PKCS8);
        cp = estc__multipart_find(&mp, ESTC__CF_PKCS7_CERTS);
        if (cp == NULL)
            cp = estc__multipart_find(&mp, ESTC__CF_PKIX_CERT);
        if (kp == NULL && estc__multipart_find(&mp, ESTC__CF_PKCS7_SERVER_KEY) != NULL)
            err = estc_error(c->ctx, ESTC_ERR_UNSUPPORTED,
                             "POST /skg: encrypted server-generated keys (280) are not supported");
        else if (kp == NULL || !kp->present || cp == NULL || !cp->present)
            err = estc_error(c->ctx, ESTC_ERR_PROTOCOL,
                             "POST /skg: the answer lacks the key (284) or the certificate");
    }
    if (err == ESTC_OK)
        err = free_address(c, c->key_base, ESTC_OBJ_KEY, NULL, &key);
    if (err == ESTC_OK)
        err = estc__journal_intent(c, key, ESTC_OBJ_KEY, NULL);
    if (err == ESTC_OK)
        err = estc_lifecycle_key_import(c->lc, key, kp->data.data, kp->data.len);
    bool imported = err == ESTC_OK;
    if (err == ESTC_OK) {
        /* Hand finish() the certificate part as a response of its own. */
        estc_response part = {.code = resp.code, .content_format = cp->cf};
        part.payload = cp->data;
        err = finish(c, &part, "POST /skg", key, NULL, NULL, NULL, NULL);
    } else if (imported) {
        estc_lifecycle_rollback(c->lc);
    }
    /* The transit copy of the private key is wiped here. */
    estc__multipart_free(&mp);
    estc_response_clear(&resp);
    estc_buf_free(&csr);
    free(key);
    if (temp != NULL)
        free(temp);
    GENERAL_NAMES_free(sans);
    X509_NAME_free(subject);
    return err;
}

/* ---- /att ------------------------------------------------------------------- */

static estc_err csrattrs_op(estc_client *c)
{
    estc_response resp = {0};
    estc__csrattrs attrs = {0};
    estc__csr_hints hints = {0};
    estc_err err = estc__client_exchange(c, best_creds(c), ESTC__EST_ATT, ESTC_COAP_GET,
                                         ESTC_CF_NONE, ESTC__CF_CSRATTRS, NULL, 0, &resp);
    if (err == ESTC_OK && resp.payload.len > 0 && resp.content_format != ESTC__CF_CSRATTRS)
        err = estc_error(c->ctx, ESTC_ERR_PROTOCOL,
                         "GET /att: answered with Content-Format %d, not 285", resp.content_format);
    if (err == ESTC_OK) {
        err = estc__codec_csrattrs(resp.payload.data, resp.payload.len, &attrs);
        if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "GET /att: malformed CSR attributes");
    }
    if (err == ESTC_OK)
        err = estc__csrattrs_hints(&attrs, &hints);
    if (err == ESTC_OK)
        err = estc_buf_set(&c->att_der, resp.payload.data, resp.payload.len);
    if (err == ESTC_OK) {
        estc__csr_hints_free(&c->hints);
        c->hints = hints;
        if (hints.key_type != 0)
            c->key_type = hints.key_type;
        estc_log(c->ctx, ESTC_LOG_INFO, "/att: %zu attribute(s)", attrs.n);
    } else {
        estc__csr_hints_free(&hints);
    }
    estc__csrattrs_free(&attrs);
    estc_response_clear(&resp);
    return err;
}

/* ---- the public operations -------------------------------------------------- */

/* Each marks the client busy (estc_client_is_ready_for_persistence()) and
 * journals the final state afterwards (estc_client_set_journal()). */
#define ESTC__RUN_OP(c, call)                                                                      \
    do {                                                                                           \
        if ((c) == NULL)                                                                           \
            return ESTC_ERR_INVALID_ARG;                                                           \
        (c)->busy++;                                                                               \
        estc_err err_ = (call);                                                                    \
        (c)->busy--;                                                                               \
        estc__journal_done(c);                                                                     \
        return err_;                                                                               \
    } while (0)

estc_err estc_client_cacerts(estc_client *c)
{
    ESTC__RUN_OP(c, cacerts_op(c));
}

estc_err estc_client_enroll(estc_client *c)
{
    ESTC__RUN_OP(c, enroll_op(c));
}

estc_err estc_client_reenroll(estc_client *c, bool rekey)
{
    ESTC__RUN_OP(c, reenroll_op(c, rekey, NULL));
}

estc_err estc__client_reenroll_held(estc_client *c, bool rekey, const estc_buf *cert_der)
{
    ESTC__RUN_OP(c, reenroll_op(c, rekey, cert_der));
}

estc_err estc_client_enroll_csr(estc_client *c, const void *csr, size_t len)
{
    ESTC__RUN_OP(c, external_csr_op(c, csr, len, false));
}

estc_err estc_client_reenroll_csr(estc_client *c, const void *csr, size_t len)
{
    ESTC__RUN_OP(c, external_csr_op(c, csr, len, true));
}

estc_err estc_client_serverkeygen(estc_client *c)
{
    ESTC__RUN_OP(c, serverkeygen_op(c));
}

estc_err estc_client_csrattrs(estc_client *c)
{
    ESTC__RUN_OP(c, csrattrs_op(c));
}
