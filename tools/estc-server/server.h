/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-server — a reference EST-coaps (RFC 9148) server with a small test CA.
 *
 * Internal declarations shared by the server's source files. Nothing here is
 * public API; every name is static or prefixed srv_.
 */
#ifndef ESTC_SERVER_H
#define ESTC_SERVER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <coap3/coap.h>

#include "policy.h"
#include "serials.h"

/* CoAP Content-Format numbers used by EST-coaps (RFC 9148 §8.3). */
#define SRV_CF_LINK_FORMAT 40
#define SRV_CF_MULTIPART 62
#define SRV_CF_PKCS7_CERTS 281
#define SRV_CF_PKCS8 284
#define SRV_CF_CSRATTRS 285
#define SRV_CF_PKCS10 286
#define SRV_CF_PKIX_CERT 287
#define SRV_CF_NONE (-1)

#define SRV_MAX_LISTEN 16
#define SRV_MAX_CLIENT_CA 16
#define SRV_MAX_LWM2M 16
#define SRV_MAX_WORKERS 256

/* Log levels: errors always, -v adds info, -vv adds debug. */
enum srv_loglevel { SRV_LOG_ERR = 0, SRV_LOG_INFO = 1, SRV_LOG_DEBUG = 2 };

struct srv_options {
    const char *listen[SRV_MAX_LISTEN];
    int n_listen;
    const char *state_dir;
    const char *cert_file;
    const char *key_file;
    const char *ca_cert_file;
    const char *ca_key_file;
    const char *client_ca[SRV_MAX_CLIENT_CA];
    int n_client_ca;
    const char *extra_ca;
    const char *csr_attrs_file;
    const char *root;
    long validity;         /* seconds */
    int block_szx;         /* -1: let libcoap choose */
    int delay_first;       /* 5.03 for the first N enrollment requests per client */
    unsigned max_age;      /* Max-Age of those 5.03 answers */
    int pop;               /* require the tls-unique challengePassword */
    long dedup_window;     /* seconds a repeated CSR gets the same answer */
    long max_runtime;      /* 0: run until SIGTERM */
    int lwm2m;             /* the LwM2M bootstrap role */
    const char *lwm2m_uri; /* server URI written to /0/1/0 */
    int lwm2m_mode;        /* Security Mode written to /0/1/2 */
    int lwm2m_bs_mode;     /* -1: no bootstrap account; else /0/0/2 */
    const char *lwm2m_bs_uri;
    struct srv_policy policy; /* enrollment policy, see policy.h */
    int verbose;
    /* Resource limits */
    long max_body;       /* bytes of a request body (Block1 reassembled) */
    long max_sessions;   /* DTLS sessions kept; the oldest idle one goes first */
    long idle_timeout;   /* seconds before an idle session is closed */
    long max_handshakes; /* handshakes in progress (after the cookie exchange) */
    long workers;        /* threads, each with its own libcoap context and sockets */
};

/* The test CA: key and certificate, plus what was issued. */
struct srv_ca {
    EVP_PKEY *key;
    X509 *cert;
    STACK_OF(X509) * extra; /* rollover / extra CA certificates for /crts */
    char *cert_path;        /* where clients find the CA certificate */
    char *index_path;       /* NULL: no index kept */
    int index_fd;           /* open for appending, -1 without an index */
    /*
     * Serial numbers issued so far (hex, upper case), to keep them unique.
     * Every worker issues: `lock` guards the set. The key and certificates
     * above are only read once set up, which OpenSSL allows from several
     * threads at once (openssl-threads(7)).
     */
    pthread_mutex_t lock;
    struct srv_serials serials;
    /*
     * What every client certificate carries the same, encoded once at set-up
     * (basicConstraints, extendedKeyUsage, keyUsage for EC and for RSA keys,
     * authorityKeyIdentifier), and SHA-1 fetched once for the
     * subjectKeyIdentifier.
     */
    X509_EXTENSION *client_ext[5];
    EVP_MD *sha1;
};

struct srv_cache; /* retransmission and delay bookkeeping, see cache.c */

struct srv {
    struct srv_options opt;
    struct srv_ca ca;
    X509_STORE *client_store; /* client CAs + own CA: who may enroll */
    X509_STORE *own_store;    /* own CA only: who may re-enroll */
    char *server_cert_path;   /* chain file sent in the handshake */
    char *server_key_path;
    /* The same, parsed once for every handshake of every worker (only read). */
    X509 *server_cert;
    STACK_OF(X509) * server_chain; /* without server_cert */
    EVP_PKEY *server_key;
    uint8_t *csr_attrs;
    size_t csr_attrs_len;
    struct srv_cache *cache;
    char *root; /* path root without leading or trailing '/' */
};

/*
 * Threads: every worker runs its own libcoap context (libcoap 4.3.1 is not
 * thread-safe within one context) with its own UDP socket per listen
 * address, all bound with SO_REUSEPORT, so the kernel's hash of the
 * address 4-tuple keeps each client, and so its DTLS session, with one
 * worker. What belongs to a context (the ClientHello guard's sockets,
 * unfinished Block1 bodies, LwM2M bootstraps) is thread-local; what all
 * share (the CA's serial list, the retransmission cache, the log) has a
 * lock; the rest of struct srv is only read after start-up.
 */

/* main.c: logging to stderr (one line at a time, whichever thread) */
void srv_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_log_ssl_errors(const char *what);
extern int srv_verbosity;

/* ca.c */
int srv_ca_setup(struct srv *s);
void srv_ca_free(struct srv_ca *ca);
/* Issue a certificate for `pub` with the subject and SAN of `req`. */
X509 *srv_ca_issue(struct srv *s, const X509_REQ *req, EVP_PKEY *pub);
int srv_ca_make_server_creds(struct srv *s);
/* Certs-only PKCS#7 (DER) holding `leaf` (may be NULL) and, when with_ca, the CA(s). */
int srv_pkcs7_certs(X509 *leaf, struct srv_ca *ca, int with_ca, uint8_t **out, size_t *out_len);
int srv_x509_der(X509 *x, uint8_t **out, size_t *out_len);
int srv_read_file(const char *path, uint8_t **out, size_t *out_len);

/* tls.c */
#define SRV_VERIFY_DEPTH 4
/* Parse the server chain and key files once, before the workers start. */
int srv_tls_load_creds(struct srv *s);
void srv_tls_free_creds(struct srv *s);
int srv_tls_setup_cb(void *tls_session, coap_dtls_pki_t *setup_data);
/* Peer certificate of the DTLS session (new reference) or NULL. */
X509 *srv_tls_peer_cert(coap_session_t *session);
/* 1 when the peer's chain verifies against `store`. */
int srv_tls_peer_verified(coap_session_t *session, X509_STORE *store);
/* tls-unique of the session (RFC 5929), base64; caller frees. NULL if unknown. */
char *srv_tls_unique_b64(coap_session_t *session);
/* Stable identity of a client: SHA-256 of its certificate, else its address. */
void srv_tls_client_id(coap_session_t *session, uint8_t id[32]);
int srv_store_add_pem_file(X509_STORE *st, const char *path);
/*
 * ClientHello guard: a stateless cookie exchange (RFC 6347 §4.2.1) in front of
 * libcoap, which keeps a session for every ClientHello it reads. Before
 * libcoap reads a datagram, srv_hello_guard_filter() answers and drops every
 * ClientHello from a peer without a session that does not carry a valid
 * cookie of ours.
 */
int srv_hello_guard_init(void);
/*
 * Find the UDP socket libcoap bound to `addr` (after coap_new_endpoint) and
 * put in its place, under the same descriptor, one bound to the same address
 * with SO_REUSEPORT, which the other workers' sockets join.
 */
int srv_hello_guard_add_endpoint(coap_context_t *ctx, const coap_address_t *addr);
/*
 * Put the guard's cookie callbacks and the ClientHello callback that sets
 * the parsed credentials on libcoap's SSL_CTX (after the first endpoint).
 */
int srv_hello_guard_take_cookies(coap_context_t *ctx, const coap_address_t *endpoint);
/* Wait up to timeout_ms for a datagram on an endpoint or libcoap's own fd. */
void srv_hello_guard_wait(coap_context_t *ctx, int timeout_ms);
/*
 * Answer and drop the unvetted ClientHellos first in line: 1 when a datagram
 * for libcoap waits, 0 when none, -1 when more ClientHellos may wait (call
 * again before letting libcoap read).
 */
int srv_hello_guard_filter(coap_context_t *ctx);
/* This worker's guard is done. */
void srv_hello_guard_free(void);
/* All workers are done: log what the guard answered, forget the secret. */
void srv_hello_guard_report(void);

/* cbor.c: multipart-core (RFC 8710) array of (content-format, bytes) pairs. */
struct srv_part {
    unsigned cf;
    const uint8_t *data;
    size_t len;
};
int srv_cbor_multipart(const struct srv_part *parts, size_t n, uint8_t **out, size_t *out_len);

/* block.c: responses */
/* Send `data` (taken over, freed by libcoap or here) with the configured block size. */
void srv_respond_body(struct srv *s, coap_resource_t *r, coap_session_t *session,
                      const coap_pdu_t *request, const coap_string_t *query, coap_pdu_t *response,
                      coap_pdu_code_t code, unsigned cf, uint8_t *data, size_t len);
/* An error code with a short diagnostic payload (no Content-Format). */
void srv_respond_error(coap_pdu_t *response, coap_pdu_code_t code, const char *diag);
/* Content-Format / Accept of a request, SRV_CF_NONE when absent. */
int srv_opt_uint(const coap_pdu_t *pdu, coap_option_num_t num);
/*
 * block.c: request bodies. Who may send a body to a resource: anyone, a
 * client with a trusted certificate, a client with a certificate of this CA.
 */
enum srv_auth { SRV_AUTH_NONE, SRV_AUTH_CLIENT, SRV_AUTH_OWN };
/*
 * coap_register_handler() for the EST resources: a method with a body goes
 * through the Block1 gate (size limit, early 4.01/4.03 by `auth`,
 * reassembly) and the handler is called once with the whole body.
 */
int srv_register_handler(coap_resource_t *r, coap_request_t method, coap_method_handler_t h,
                         enum srv_auth auth);
/* A session is gone: drop its unfinished bodies. */
void srv_block1_forget(coap_session_t *session);
void srv_block1_free(void);

/* cache.c */
struct srv_cache *srv_cache_new(void);
void srv_cache_free(struct srv_cache *c);
/* Delay mode: 1 when this request must be answered 5.03. */
int srv_cache_should_delay(struct srv_cache *c, const uint8_t id[32], coap_session_t *session,
                           coap_mid_t mid, int delay_first);
/* Retransmission safety: what was issued for (client, resource, CSR). */
struct srv_answer {
    uint8_t *cert; /* DER */
    size_t cert_len;
    uint8_t *pkey; /* PKCS#8 DER for skg/skc, else NULL */
    size_t pkey_len;
};
int srv_cache_lookup(struct srv_cache *c, const uint8_t key[32], long window,
                     struct srv_answer *out);
int srv_cache_store(struct srv_cache *c, const uint8_t key[32], const struct srv_answer *ans);
void srv_answer_clear(struct srv_answer *a);

/* est.c */
/* Once, before the workers: what the policy needs from the server certificate. */
int srv_est_prepare(struct srv *s);
int srv_est_register(struct srv *s, coap_context_t *ctx);

/* lwm2m.c: the LwM2M bootstrap role */
int srv_lwm2m_register(struct srv *s, coap_context_t *ctx);
/* Start the writes of bootstraps answered since the last call. */
void srv_lwm2m_poll(struct srv *s);
void srv_lwm2m_free(void);

#endif
