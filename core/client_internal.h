/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The EST client's private structure, shared by the files of core/.
 */
#ifndef ESTC_CORE_CLIENT_INTERNAL_H
#define ESTC_CORE_CLIENT_INTERNAL_H

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <estc/client.h>
#include <estc/persist.h>
#include <estc/provider.h>
#include <estc/schedule.h>

#include "codec.h"

/* The CoAPs port when the URI names none (RFC 7252). */
#define ESTC__DEFAULT_PORT 5684

/* One trust anchor as configured: its certificates, and whether it is an
 * implicit anchor (dropped once /crts gives the explicit set). */
struct estc__anchor {
    estc__der_list certs;
    bool implicit;
};

/* Which credentials a DTLS session authenticates with. */
enum estc__creds {
    ESTC__CREDS_NONE = 0,
    ESTC__CREDS_BOOTSTRAP, /* the configured certificate and key (/sen, /skg) */
    ESTC__CREDS_ENROLLED,  /* the enrolled certificate and key (/sren) */
};

/* The longest detail text kept for estc_client_last_error(), NUL included. */
#define ESTC__LAST_ERROR_MAX 512

struct estc_client {
    estc_ctx *ctx;
    estc_provider *provider;

    /* server */
    char *host; /* DNS name or IP literal (IPv6 without brackets) */
    uint16_t port;
    char *root;                   /* "/est"; NULL: discover */
    char *identity;               /* NULL: the host */
    char *paths[ESTC__EST_COUNT]; /* resource paths once known */

    /* trust */
    struct estc__anchor *anchors;
    size_t n_anchors;
    estc__der_list explicit_certs; /* from /crts */
    char **ca_addrs;               /* their engine addresses */
    size_t n_ca_addrs;
    bool have_explicit;

    /* credentials */
    char *boot_cert; /* engine address or PEM file */
    char *boot_key;
    char *key_addr;  /* the enrolled key now */
    char *cert_addr; /* the enrolled certificate now */
    char *key_base;  /* the configured addresses: used when free, else the */
    char *cert_base; /* prefix for a generated one */
    char *ca_prefix;
    bool bases_configured; /* estc_client_set_enrolled() named them */

    /* request */
    char *subject;
    char **sans;
    size_t n_sans;
    estc_key_type key_type;
    estc__csr_hints hints;
    estc_buf att_der; /* the last /att answer, as received */
    int accept;
    unsigned timeout_ms;
    unsigned max_retries;
    unsigned max_wait_s;
    bool (*cancel)(void *arg); /* estc_client_set_cancel() */
    void *cancel_arg;
    unsigned block_szx;
    bool pop;      /* challengePassword = base64(tls-unique) in every CSR */
    char *pop_key; /* the key the last CSR was signed with, to sign it again */
    /* While /sren runs: the enrolled certificate's DER, read once, for the
     * session's credentials too. Borrowed; NULL otherwise. */
    const estc_buf *held_cert;
    /* A pair read and checked by estc_client_check_credentials(): taken by
     * the next session with these credentials instead of reading them again
     * (OpenSSL 3.0 builds a decoder for every key and certificate read). */
    struct {
        char *cert_src; /* the addresses or files they came from; NULL: empty */
        char *key_src;
        X509 *cert;
        EVP_PKEY *key;
    } checked;

    /* certificates parsed already, by their DER (estc__x509_cached()) */
    struct estc__x509_memo {
        estc_buf der;
        X509 *x509;
    } x509_memo[8];
    size_t n_x509_memo;
    size_t x509_memo_next; /* the entry replaced next when all are used */

    /* transport */
    estc_transport *transport;
    bool custom_transport;
    enum estc__creds transport_creds;

    estc_lifecycle *lc;
    bool own_lc;

    /* ---- persistence and re-enrollment (core/persist.c, core/renewal.c,
     * core/schedule.c); all zero at creation means: the defaults. ---- */
    unsigned busy; /* public operations in flight */
    bool have_journal;
    estc_state_stream journal;
    bool sched_set; /* else estc_schedule_config_init() values */
    estc_schedule_config sched;
    double jitter_share; /* estc_client_set_renewal_jitter(); 0: none */
    int64_t jitter_max_s;
    estc_clock_fn clock; /* NULL: time() */
    void *clock_arg;
    bool policy_set; /* else ESTC_CACERTS_EST */
    estc_cacerts_policy policy;
    estc_trust_export_fn export_fn;
    void *export_arg;
    int64_t provisioned; /* when the current certificate was enrolled */
    bool have_cert_hash;
    uint8_t cert_hash[32]; /* SHA-256 of the certificate provisioned refers to */
    int64_t retry_at;      /* next attempt after a failure; 0: none */
    unsigned failures;     /* failed /sren attempts since the last success */
    bool fallback;         /* /sren gave up: /sen with bootstrap credentials */
    bool crts_due;         /* /crts after a renewal, per policy */
    /* The last failed tick since the last new certificate (status
     * displays): when (0: none), its error and its detail, redacted. */
    int64_t last_error_at;
    estc_err last_error;
    char last_error_detail[ESTC__LAST_ERROR_MAX];
};

/*
 * The files of core/ call each other in one direction only, the later ones
 * using the earlier ones (never the reverse), sections below in this order:
 *
 *   codec_der.c, codec_cbor.c, codec_link.c  what servers send (codec.h)
 *   transport.c, transport_coap.c            CoAP over DTLS (estc/transport.h)
 *   csr.c, validate.c                        requests, and what was issued
 *   renewal.c                                when to renew; what was provisioned
 *   client_transport.c                       the DTLS session and exchanges
 *   client.c                                 creation, configuration, results
 *   persist_format.c                         the state's encoding (persist_format.h)
 *   persist.c                                streams, persist, restore, the journal
 *   enroll.c                                 the EST operations
 *   schedule.c                               re-enrollment: the tick
 *   lwm2m.c                                  the public API only
 */

/* ---- csr.c -------------------------------------------------------------- */

/* A DER PKCS#10 request for the key at @key_addr with @subject and @sans
 * (and the CSR-attribute hints), signed by the key's engine. @made: the
 * key's SubjectPublicKeyInfo as read when it was made; the request carries
 * it, and the signature is checked against it (ESTC_ERR_VALIDATION when the
 * key was swapped in between). NULL: read from the engine now. With
 * proof-of-possession it carries @pop_b64 (tls-unique in base64, see
 * estc__client_pop_value()) as its challengePassword, unless that is empty,
 * and the key is remembered for estc__csr_rebind(). A NULL @pop_b64: a CSR
 * for no session (estc_client_make_csr()), nothing remembered. */
estc_err estc__csr_build(estc_client *c, const char *key_addr, const estc_buf *made,
                         const X509_NAME *subject, const GENERAL_NAMES *sans, const char *pop_b64,
                         estc_buf *der);
/* With proof-of-possession: @der's challengePassword made @b64, signed
 * again with the key of the last estc__csr_build(), into @out; *@changed is
 * false (and @out untouched) when it already is. */
estc_err estc__csr_rebind(estc_client *c, const estc_buf *der, const char *b64, estc_buf *out,
                          bool *changed);
/* A PKCS#10 request made elsewhere (@len bytes of PEM or DER): parsed,
 * its self-signature verified; its DER into @der and its public key
 * (SubjectPublicKeyInfo DER) into @spki, each unless NULL. */
estc_err estc__csr_parse(estc_client *c, const void *data, size_t len, estc_buf *der,
                         estc_buf *spki);
/* Parses "/CN=a/O=b" into a name. */
estc_err estc__parse_subject(estc_client *c, const char *text, X509_NAME **out);
/* The configured subjectAltName entries as GENERAL_NAMES (NULL when none). */
estc_err estc__parse_sans(estc_client *c, GENERAL_NAMES **out);

/* ---- validate.c --------------------------------------------------------- */

/* The certificate @der parsed, as a new reference (X509_free() it), or NULL
 * when it does not parse or memory runs out. The client remembers the last
 * few it parsed by their exact bytes: the trust anchors are read for every
 * DTLS session and every validation, and OpenSSL 3.0 decodes each
 * certificate's public key through a new decoder, which costs more than the
 * rest of the parse. */
X509 *estc__x509_cached(estc_client *c, const estc_buf *der);
/* Remembers @x, parsed elsewhere from exactly @der (a reference is taken). */
void estc__x509_remember(estc_client *c, const estc_buf *der, X509 *x);
/* Forgets them all (estc_client_free()). */
void estc__x509_cache_free(estc_client *c);

/* The trust store for chains: the explicit set when /crts succeeded, else
 * every configured anchor; configured explicit anchors always. */
estc_err estc__trust_store(estc_client *c, X509_STORE **out);
/*
 * Finds the certificate for @spki among @certs and checks it: it chains to
 * the trust store (the other certificates as intermediates), its validity
 * has begun and not ended; with @old, Subject and subjectAltName equal
 * @old's. *@leaf receives the index of the issued certificate.
 */
estc_err estc__validate_issued(estc_client *c, const estc__der_list *certs, const estc_buf *spki,
                               X509 *old, size_t *leaf);

/* ---- renewal.c ------------------------------------------------------------ */

/* The schedule's configuration: the client's, or the defaults in @tmp. */
const estc_schedule_config *estc__schedule_config(const estc_client *c, estc_schedule_config *tmp);

/* What the schedule needs of a certificate. */
struct estc__cert_view {
    bool have; /* false: no certificate */
    int64_t not_before, not_after;
    uint8_t hash[32]; /* SHA-256 of the DER */
};
/* Reads @der into @cv; ESTC_ERR_FORMAT (no detail) when it is no certificate. */
estc_err estc__cert_view_parse(const estc_buf *der, struct estc__cert_view *cv);
/* The same from @x, already parsed from @der (NULL: ESTC_ERR_FORMAT). */
estc_err estc__cert_view_of(const estc_buf *der, X509 *x, struct estc__cert_view *cv);
/* Loads the enrolled certificate into @cv (cv->have false when there is
 * none) and, when @der is not NULL, its DER into @der. */
estc_err estc__cert_view_load(estc_client *c, estc_buf *der, struct estc__cert_view *cv);
/* Whether @cv is the certificate the provisioning record refers to. */
bool estc__cert_known(const estc_client *c, const struct estc__cert_view *cv);

/*
 * The provisioning record (provisioned, cert_hash) changes here only:
 * estc__provisioned() when a certificate begins its period (the commit of
 * an enrollment, or the tick's first sight of one it did not enroll): no
 * failures, retry or fallback then; estc__provisioned_restore() from the
 * persisted state (@hash may be NULL); estc__provisioned_forget() when
 * nothing is enrolled any more.
 */
void estc__provisioned(estc_client *c, const struct estc__cert_view *cv, int64_t when);
void estc__provisioned_restore(estc_client *c, const uint8_t *hash, int64_t when);
void estc__provisioned_forget(estc_client *c);

/* The record as it applies to @cv at @now, changing nothing: a certificate
 * not seen before counts as provisioned @now, without failures. */
struct estc__schedule_state {
    int64_t provisioned;
    unsigned failures;
    bool fallback;
    int64_t retry_at;
};
void estc__schedule_state(const estc_client *c, const struct estc__cert_view *cv, int64_t now,
                          struct estc__schedule_state *st);
/* The renewal time of @cv when provisioned at @provisioned. */
int64_t estc__renewal_time(const estc_client *c, int64_t provisioned,
                           const struct estc__cert_view *cv);
/* When the tick next has work (estc_client_next_deadline()) for @cv. */
int64_t estc__deadline(const estc_client *c, const struct estc__cert_view *cv, int64_t now);

/* ---- client_transport.c --------------------------------------------------- */

/* Sends one request on the right session, waiting out 5.03 answers, and
 * turns CoAP errors into ESTC_ERR_SERVER. @resp holds the 2.xx answer. */
estc_err estc__client_exchange(estc_client *c, enum estc__creds creds, estc__est_resource res,
                               estc_coap_method method, int cf, int accept, const uint8_t *payload,
                               size_t len, estc_response *resp);
/* base64 of a tls-unique value, NUL included. */
#define ESTC__POP_B64_MAX (4 * ((ESTC_TLS_UNIQUE_MAX + 2) / 3) + 1)
/* Opens the session for @creds, completes its handshake and gives its
 * tls-unique value in base64 (RFC 7030 §3.5), trying again like an exchange
 * when the handshake gets no answer. */
estc_err estc__client_pop_value(estc_client *c, enum estc__creds creds,
                                char b64[ESTC__POP_B64_MAX]);
/* Drops the DTLS session, so the next exchange handshakes anew (new trust
 * store, other credentials). */
void estc__client_reset_transport(estc_client *c);
/* Drops a pair kept by estc_client_check_credentials(). */
void estc__client_drop_checked(estc_client *c);
estc_err estc__client_recheck_server(estc_client *c, enum estc__creds creds);
/* Whether @s names an engine object (else it is a file path). */
bool estc__is_engine_address(estc_client *c, const char *s);

/* ---- client.c ------------------------------------------------------------- */

/* @base without the name a generated address put under it ("...estc-key-
 * <16 hex>" and what the engine appends), as a new string in *@out: the
 * stable base a new name goes under, so that repeated rekeys do not grow
 * names. A base with no generated name comes back as it is. */
estc_err estc__stable_base(estc_client *c, const char *base, estc_obj_kind kind, char **out);
/* Whether @addr is an object the client may have made of @kind under
 * @base: @base itself, or a name the engine derives under @base, its stable
 * base or its bare scheme (engines that number their objects: any address
 * of @base's scheme). */
bool estc__derived_from(estc_client *c, const char *addr, estc_obj_kind kind, const char *base);

/* ---- persist_format.c: in persist_format.h, for persist.c alone ----------- */

/* ---- persist.c ------------------------------------------------------------ */

/* The journal (estc_client_set_journal()); each is a no-op without one.
 * Before an object is created at @addr: the state with it marked pending.
 * @cert_der: the enrolled certificate's DER when in hand, else NULL. */
estc_err estc__journal_intent(estc_client *c, const char *addr, estc_obj_kind kind,
                              const estc_buf *cert_der);
/* Just before a commit: the state as it will be after it. NULL @cert, @key
 * or @cas: the current ones; @ca_addrs parallel to @cas. @cert_der: the
 * DER of that certificate when in hand, else NULL. */
estc_err estc__journal_commit(estc_client *c, const char *cert, const estc_buf *cert_der,
                              const char *key, char *const *ca_addrs, const estc__der_list *cas);
/* After an operation: the final state, when ready for persistence. */
void estc__journal_done(estc_client *c);

/* ---- enroll.c ----------------------------------------------------------------- */

/* estc_client_reenroll() with the enrolled certificate's DER already read
 * (@cert_der), so that it is not read again. */
estc_err estc__client_reenroll_held(estc_client *c, bool rekey, const estc_buf *cert_der);

#endif
