/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc — the EST-coaps client (RFC 9148; EST of RFC 7030 over CoAP/DTLS).
 *
 * A client is configured once and then runs operations: discovery, CA
 * certificates (/crts), enrollment (/sen), re-enrollment (/sren),
 * server-side key generation (/skg, /skc) and CSR attributes (/att). Every
 * key, certificate and trust-store object goes through the engines of its
 * estc_ctx (see <estc/engine.h>): the private key is generated in its engine
 * and never leaves it; the CSR is signed by the key's engine, and the DTLS
 * handshake signs with an engine-held key through the estc OpenSSL provider.
 *
 * Everything a server sends is validated before anything is committed: the
 * issued certificate's public key must be ours, it must chain to the trust
 * store, its validity must have begun and not ended, and after /sren its
 * Subject and subjectAltName must be the old ones. On any failure the
 * previous credentials and engine objects are untouched and half-made ones
 * are removed (see the lifecycle tracker).
 *
 * Threads: a client and its estc_ctx are used by one thread at a time.
 */
#ifndef ESTC_CLIENT_H
#define ESTC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <estc/engine.h>
#include <estc/transport.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct estc_client estc_client;

/**
 * estc_client_new() - a client whose engine objects live in @ctx.
 *
 * Defaults: enrolled key at "mem:estc-key", certificate at "mem:estc-cert",
 * CA certificates under "mem:" (one per certificate, named by the address
 * generator), key type EC P-256, Accept 281 for certificates, request
 * time-out 30 s, at most 5 waits on 5.03 of at most 300 s each.
 * The estc OpenSSL provider is loaded when a DTLS session first needs an
 * engine-held client key (not for PEM files or file: keys).
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG or ESTC_ERR_NOMEM.
 */
estc_err estc_client_new(estc_ctx *ctx, estc_client **out);

/** estc_client_free() - free the client; engine objects stay. NULL ok. */
void estc_client_free(estc_client *client);

/* ------------------------------------------------------------------------ */
/* Configuration (before the first operation; each returns                   */
/* ESTC_ERR_INVALID_ARG for a NULL client or malformed value, ESTC_ERR_NOMEM) */
/* ------------------------------------------------------------------------ */

/**
 * estc_client_set_server() - "coaps://host[:port][/root]".
 *
 * host is a DNS name, an IPv4 address or an IPv6 address in brackets; port
 * 5684 by default. With a root ("/est", "/.well-known/est") the resources
 * are root + "/crts" etc.; without one they are found by discovery
 * (/.well-known/core?rt=ace.est*) at the first operation.
 * The server's certificate must name the host in its subjectAltName, unless
 * estc_client_set_server_identity() names another identity.
 */
estc_err estc_client_set_server(estc_client *client, const char *uri);

/** estc_client_set_server_identity() - the DNS name or IP address the
 * server's certificate must carry, when it differs from the URI's host. */
estc_err estc_client_set_server_identity(estc_client *client, const char *identity);

/**
 * estc_client_add_trust_anchor() - trust the CA certificate(s) at @source for
 * the server's chain and the issued certificate's chain.
 * @source: a PEM file path (one or more certificates) or an engine address of
 *          a trust-store certificate.
 * @implicit: true for an implicit trust anchor (the manufacturer's or the
 *          network's bootstrap CA), used only until /crts succeeds; the
 *          explicit set from /crts then replaces it. false: always trusted.
 * Also ESTC_ERR_IO / ESTC_ERR_FORMAT when a file holds no certificate, or
 * the engine's errors for an address.
 */
estc_err estc_client_add_trust_anchor(estc_client *client, const char *source, bool implicit);

/**
 * estc_client_set_credentials() - the DTLS client certificate and key for
 * /sen and /skg (the bootstrap or IDevID credentials). Each is an engine
 * address or a PEM file path. /sren uses the enrolled certificate and key.
 * Without them, discovery, /crts and /att run without a client certificate
 * (where the server allows it).
 */
estc_err estc_client_set_credentials(estc_client *client, const char *cert, const char *key);

/** Which configured credentials estc_client_check_credentials() reads. */
typedef enum estc_client_creds {
    ESTC_CLIENT_CREDS_BOOTSTRAP = 1, /* estc_client_set_credentials()'s pair (/sen, /skg) */
    ESTC_CLIENT_CREDS_ENROLLED,      /* the enrolled pair of estc_client_set_enrolled() (/sren) */
} estc_client_creds;

/**
 * estc_client_check_credentials() - read the configured certificate and key
 * now, before any network traffic, and check that they are a pair.
 * @which: the bootstrap pair or the enrolled pair (both addresses must be
 *          set; the enrolled certificate must exist).
 * The objects read are kept for the next DTLS session that authenticates
 * with them, so checking first costs no second read. Configuring other
 * credentials, or that session, drops them.
 * Returns ESTC_OK; ESTC_ERR_CRYPTO when the key does not belong to the
 * certificate (their public keys differ); ESTC_ERR_STATE when @which is not
 * configured; or the error of reading either (ESTC_ERR_IO, ESTC_ERR_FORMAT,
 * ESTC_ERR_NOT_FOUND, ESTC_ERR_AUTH, an engine's). Nothing is sent.
 */
estc_err estc_client_check_credentials(estc_client *client, estc_client_creds which);

/**
 * estc_client_set_enrolled() - where the enrolled credentials go.
 * @key: engine address of the enrolled key (NULL: keep the current one).
 * @cert: engine address of the enrolled certificate (NULL: keep).
 * @ca_prefix: engine prefix under which CA certificates from /crts are
 *          stored, one per certificate at the address the scheme's
 *          generator gives (NULL: keep).
 */
estc_err estc_client_set_enrolled(estc_client *client, const char *key, const char *cert,
                                  const char *ca_prefix);

/**
 * estc_client_set_subject() - the Subject to request, as
 * "/CN=device-1/O=Example" (OpenSSL's one-line form). Required for /sen.
 */
estc_err estc_client_set_subject(estc_client *client, const char *subject);

/**
 * estc_client_add_san() - one subjectAltName entry to request:
 * "DNS:name", "IP:192.0.2.1", "IP:2001:db8::1", "URI:urn:dev:ops:1",
 * "email:a@b.example".
 */
estc_err estc_client_add_san(estc_client *client, const char *san);

/** estc_client_set_key_type() - the type of keys to generate (default P-256). */
estc_err estc_client_set_key_type(estc_client *client, estc_key_type type);

/**
 * estc_client_set_accept() - the Content-Format to Accept in certificate
 * responses: 281 (certs-only PKCS#7, default), 287 (one DER certificate) or
 * ESTC_CF_NONE (no Accept option). Both are accepted in answers anyway.
 */
estc_err estc_client_set_accept(estc_client *client, int content_format);

/**
 * estc_client_set_limits() - the time-out of one exchange in ms (0: keep),
 * the most 5.03 answers waited out per request, and the longest Max-Age
 * waited (seconds): a longer one fails the operation with ESTC_ERR_LIMIT.
 */
estc_err estc_client_set_limits(estc_client *client, unsigned timeout_ms, unsigned max_retries,
                                unsigned max_wait_s);

/**
 * estc_client_set_cancel() - a callback that can end a running operation.
 *
 * @cancel (NULL: none) is asked at least every 100 ms while the client
 * waits: for a DTLS handshake, an answer, a retransmission, a 5.03 Max-Age
 * pause. When it returns true the operation fails with ESTC_ERR_CANCELLED
 * and rolls back as any failed operation does (a new key is removed, the
 * current certificate stays). A daemon uses it so that SIGTERM ends a
 * renewal that waits on the network. @cancel runs on the calling thread
 * and must not call into the client.
 * Returns ESTC_OK or ESTC_ERR_INVALID_ARG (NULL @client).
 */
estc_err estc_client_set_cancel(estc_client *client, bool (*cancel)(void *arg), void *arg);

/** estc_client_set_block_size() - CoAP block size 16..1024 (a power of 2). */
estc_err estc_client_set_block_size(estc_client *client, unsigned bytes);

/**
 * estc_client_set_pop() - proof-of-possession (RFC 7030 §3.5, RFC 9148):
 * every CSR (/sen, /sren, /skg) carries the tls-unique value of the DTLS
 * session that sends it, base64, as its challengePassword, so the server can
 * tell the CSR was made for this session. The handshake is completed before
 * the CSR is signed; should the request still go on another session (a lost
 * handshake tried again) the CSR is signed again for it. Off by default. The
 * transport must offer tls_unique (the libcoap one does); otherwise
 * operations with a CSR fail with ESTC_ERR_UNSUPPORTED.
 */
estc_err estc_client_set_pop(estc_client *client, bool enable);

/**
 * estc_client_set_transport() - use @transport instead of libcoap (an LwM2M
 * client's own connection, or a test double). The client takes ownership.
 * The transport is then responsible for the server's authentication.
 */
estc_err estc_client_set_transport(estc_client *client, estc_transport *transport);

/**
 * estc_client_set_lifecycle() - record created objects in @lc (owned by the
 * caller, e.g. restored from persisted state) instead of a private record.
 */
estc_err estc_client_set_lifecycle(estc_client *client, estc_lifecycle *lc);

/* ------------------------------------------------------------------------ */
/* Operations                                                                */
/* ------------------------------------------------------------------------ */
/*
 * Besides the errors named, every operation can return: ESTC_ERR_STATE (not
 * configured enough: no server, no subject for /sen, no certificate for
 * /sren), ESTC_ERR_TRANSPORT / ESTC_ERR_TIMEOUT (no answer; DTLS alert),
 * ESTC_ERR_VALIDATION (the server's identity or chain, or what it sent),
 * ESTC_ERR_SERVER (an error code; the detail has the code and the server's
 * diagnostic), ESTC_ERR_PROTOCOL (a wrong Content-Format), ESTC_ERR_FORMAT
 * (a malformed payload), ESTC_ERR_LIMIT (a response too big, too many 5.03),
 * and the engines' errors. The detail text is in estc_ctx_error_detail().
 */

/** estc_client_discover() - find the EST resources by discovery. */
estc_err estc_client_discover(estc_client *client);

/**
 * estc_client_cacerts() - GET /crts; store each CA certificate under the CA
 * prefix and make the set the explicit trust store (implicit anchors are
 * dropped; the DTLS session is re-established against the new set).
 * Certificates no longer sent are removed from the engine.
 */
estc_err estc_client_cacerts(estc_client *client);

/**
 * estc_client_enroll() - POST /sen with a new key (generated at the
 * enrolled key address, or at a generated address when that one is taken),
 * authenticated with the bootstrap credentials.
 */
estc_err estc_client_enroll(estc_client *client);

/**
 * estc_client_reenroll() - POST /sren authenticated with the enrolled
 * certificate; the same key, or a new one with @rekey.
 */
estc_err estc_client_reenroll(estc_client *client, bool rekey);

/**
 * estc_client_serverkeygen() - POST /skg: the server generates the key; it is
 * imported into the engine at the enrolled key address (the engine must
 * support key_import) and the transit copy wiped.
 */
estc_err estc_client_serverkeygen(estc_client *client);

/**
 * estc_client_csrattrs() - GET /att and apply what it asks for (key type,
 * hash, extensions) to the following CSRs. An empty answer is fine.
 */
estc_err estc_client_csrattrs(estc_client *client);

/* ------------------------------------------------------------------------ */
/* Keys no engine reaches: CSRs made and enrolled apart                      */
/* ------------------------------------------------------------------------ */
/*
 * A key in a secure element with its own SDK, or on an offline signing
 * station, cannot be used by an engine. Its CSR is made there and enrolled
 * here: estc_client_enroll_csr() or estc_client_reenroll_csr(). The other
 * way round, estc_client_make_csr() gives the request an enrollment would
 * send for an engine key, to be carried to a server by other means.
 */

/**
 * estc_client_make_csr() - the PKCS#10 request (DER) that estc_client_enroll()
 * would send for the key at @key_addr, into @der; no network.
 *
 * The Subject (estc_client_set_subject(), required), the subjectAltName
 * entries (estc_client_add_san()) and what a preceding estc_client_csrattrs()
 * asked for (extensions, hash) go in as enroll puts them; it is signed in the
 * key's engine (estc_key_sign()). It carries no proof-of-possession
 * value: that names a DTLS session, and there is none.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL argument; a malformed subject
 * or subjectAltName), ESTC_ERR_STATE (no subject), ESTC_ERR_NOT_FOUND (no
 * key at @key_addr), ESTC_ERR_CRYPTO (signing failed), ESTC_ERR_NOMEM, or
 * the engine's errors.
 */
estc_err estc_client_make_csr(estc_client *client, const char *key_addr, estc_buf *der);

/**
 * estc_client_check_csr() - reads a PKCS#10 request made elsewhere: @len
 * bytes at @csr, PEM ("CERTIFICATE REQUEST") or DER, at most 64 KiB. Its
 * signature must verify with the public key it carries (the key's holder
 * signed it). Gives its DER in @der (NULL: only check).
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL argument, empty input),
 * ESTC_ERR_FORMAT (not a CSR, trailing bytes, too big), ESTC_ERR_CRYPTO (the
 * signature does not verify), ESTC_ERR_NOMEM. Nothing is sent or stored.
 */
estc_err estc_client_check_csr(estc_client *client, const void *csr, size_t len, estc_buf *der);

/**
 * estc_client_enroll_csr() - POST /sen with a CSR made elsewhere, on a
 * session authenticated with the bootstrap credentials.
 *
 * The CSR is first checked as estc_client_check_csr() does; no key is
 * made. The issued certificate must be for the CSR's public key (else
 * ESTC_ERR_VALIDATION and nothing is stored) and chain to the trust store;
 * it is then stored at the enrolled certificate address, as by
 * estc_client_enroll(). The enrolled key address does not change: the
 * certificate's key is wherever the CSR was made, so renewing it with the
 * enrolled credentials needs estc_client_set_enrolled() to name an address
 * an engine reaches it at. Not with proof-of-possession
 * (estc_client_set_pop()): the CSR cannot be signed again for the session
 * (ESTC_ERR_UNSUPPORTED, before any network).
 * Errors: those of estc_client_check_csr() and of every operation.
 */
estc_err estc_client_enroll_csr(estc_client *client, const void *csr, size_t len);

/**
 * estc_client_reenroll_csr() - POST /sren with a CSR made elsewhere, on a
 * session authenticated with the enrolled certificate and key.
 *
 * As estc_client_enroll_csr(); the issued certificate must also keep the
 * Subject and subjectAltName of the enrolled one. It replaces the enrolled
 * certificate; the enrolled key address does not change (when the CSR is
 * for another key, that key no longer belongs to the certificate).
 */
estc_err estc_client_reenroll_csr(estc_client *client, const void *csr, size_t len);

/* ------------------------------------------------------------------------ */
/* Results                                                                   */
/* ------------------------------------------------------------------------ */

/** estc_client_key_address() - the enrolled key's address (owned by the client). */
const char *estc_client_key_address(const estc_client *client);
/** estc_client_cert_address() - the enrolled certificate's address. */
const char *estc_client_cert_address(const estc_client *client);
/**
 * estc_client_enrolled_base() - where new enrolled objects go: the address
 * estc_client_set_enrolled() gave for @kind (ESTC_OBJ_KEY, ESTC_OBJ_CERT,
 * or ESTC_OBJ_TRUST for the CA prefix; file paths made absolute), and after
 * estc_client_restore() the one the state recorded. NULL when none is set.
 * An application compares the two to notice that its configuration names
 * other addresses than a state it restores (the state's win).
 */
const char *estc_client_enrolled_base(const estc_client *client, estc_obj_kind kind);

/** estc_client_certificate() - the enrolled certificate, DER, into @der.
 * ESTC_ERR_NOT_FOUND before an enrollment. */
estc_err estc_client_certificate(estc_client *client, estc_buf *der);

/** estc_client_ca_count() - the number of CA certificates from /crts held. */
size_t estc_client_ca_count(const estc_client *client);

/** estc_client_ca_address() - the engine address of CA certificate @i. */
const char *estc_client_ca_address(const estc_client *client, size_t i);

/**
 * estc_client_resource_path() - the path of EST resource @name ("crts",
 * "sen", "sren", "skg", "skc", "att") as configured or discovered; NULL when
 * not known (yet). Owned by the client.
 */
const char *estc_client_resource_path(estc_client *client, const char *name);

/**
 * estc_client_csrattrs_der() - the last /att answer as received (CF 285 DER;
 * empty when the server has none) into @der. ESTC_ERR_NOT_FOUND before
 * estc_client_csrattrs() succeeded.
 */
estc_err estc_client_csrattrs_der(estc_client *client, estc_buf *der);

/** estc_client_lifecycle() - the record of the objects the client made. */
estc_lifecycle *estc_client_lifecycle(estc_client *client);

#ifdef __cplusplus
}
#endif
#endif
