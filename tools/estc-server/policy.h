/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc-server's enrollment policy: which names a CSR may ask for.
 *
 * The checks are pure functions of the parsed CSR, the client's certificate
 * and the server's own certificate, with OpenSSL as the only dependency, so
 * that the fuzz build (which has no libcoap) compiles this file directly.
 * Nothing here is public API.
 */
#ifndef ESTC_SERVER_POLICY_H
#define ESTC_SERVER_POLICY_H

#include <stddef.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Which CN a CSR may carry, compared with the client certificate. */
enum srv_cn_rule {
    SRV_CN_ANY = 0,       /* none: any CN the other rules allow */
    SRV_CN_CLIENT_CN,     /* client-cn: the client certificate's CN */
    SRV_CN_CLIENT_SERIAL, /* client-serial: its subject serialNumber */
};

/* Bits of srv_policy.san_types, one per GeneralName kind (GEN_* numbers). */
#define SRV_SAN_TYPE(gen) (1u << (gen))
#define SRV_SAN_ALL                                                                                \
    (SRV_SAN_TYPE(GEN_OTHERNAME) | SRV_SAN_TYPE(GEN_EMAIL) | SRV_SAN_TYPE(GEN_DNS) |               \
     SRV_SAN_TYPE(GEN_X400) | SRV_SAN_TYPE(GEN_DIRNAME) | SRV_SAN_TYPE(GEN_EDIPARTY) |             \
     SRV_SAN_TYPE(GEN_URI) | SRV_SAN_TYPE(GEN_IPADD) | SRV_SAN_TYPE(GEN_RID))

#define SRV_POLICY_MAX_SANS 16
#define SRV_POLICY_MAX_CSR_SIZE 8192

struct srv_policy {
    size_t max_csr_size; /* bytes of the DER CSR */
    int max_sans;        /* GeneralNames in the subjectAltName */
    enum srv_cn_rule cn_rule;
    unsigned san_types;     /* SRV_SAN_TYPE bits allowed */
    int allow_server_names; /* may a CSR name the server's own DNS names and addresses */
    /* The server's identity, from its certificate (owned; NULL: none known). */
    GENERAL_NAMES *server_sans;
    X509_NAME *server_subject;
};

/* How a refusal is answered. */
enum srv_policy_verdict {
    SRV_POLICY_OK = 0,
    SRV_POLICY_BAD_REQUEST, /* 4.00: the CSR is malformed (bytes, syntax) */
    SRV_POLICY_FORBIDDEN,   /* 4.03: well formed, but not a name this client may have */
    SRV_POLICY_TOO_LARGE,   /* 4.13: over --max-csr-size */
};

struct srv_policy_refusal {
    const char *rule; /* the option or rule name, e.g. "max-sans" */
    char diag[160];   /* "policy RULE: what", printable ASCII only */
};

/* Defaults: size 8192, 16 SANs, any CN, all SAN types, server names refused. */
void srv_policy_init(struct srv_policy *p);
void srv_policy_free(struct srv_policy *p);
/* Sets one command-line option (NAME without "--"); on error prints to
 * stderr and returns -1. */
int srv_policy_option(struct srv_policy *p, const char *name, const char *value);
/* Takes the server's DNS names, IP addresses and CN from its certificate. */
int srv_policy_set_server(struct srv_policy *p, const X509 *server_cert);

/* The CSR's size, before it is parsed. */
enum srv_policy_verdict srv_policy_check_size(const struct srv_policy *p, size_t der_len,
                                              struct srv_policy_refusal *why);
/*
 * The names of a parsed CSR. `client` is the certificate the request came
 * with (may be NULL: then the CN rules refuse). `renewal`: sren, where the
 * identity rule below binds the subject instead of the CN rule.
 */
enum srv_policy_verdict srv_policy_check_csr(const struct srv_policy *p, const X509_REQ *req,
                                             const X509 *client, int renewal,
                                             struct srv_policy_refusal *why);
/*
 * sren (RFC 7030 §4.2.2): the CSR's Subject and subjectAltName must be
 * identical to the current certificate's: the same DER, no case folding or
 * other canonicalization. 1 when identical.
 */
int srv_policy_same_identity(const X509 *cert, const X509_REQ *req);

#endif
