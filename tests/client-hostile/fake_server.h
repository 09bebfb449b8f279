/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A fake EST server inside the test process, plugged under the client with
 * estc_transport_new(). It exists only because a real server cannot be made
 * to send these answers: certificates for another key, from an untrusted
 * issuer, out of their validity, in a wrong Content-Format, garbage,
 * truncated, endless 5.03. Everything it "issues" is a real certificate,
 * signed by a test CA made with OpenSSL here.
 */
#ifndef ESTC_TEST_FAKE_SERVER_H
#define ESTC_TEST_FAKE_SERVER_H

#include <stdbool.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <estc/transport.h>

enum fake_answer {
    FAKE_GOOD = 0,      /* a correct answer */
    FAKE_OTHER_KEY,     /* a certificate for a key that is not the CSR's */
    FAKE_UNTRUSTED,     /* signed by a CA the client does not trust */
    FAKE_EXPIRED,       /* notAfter in the past */
    FAKE_NOT_YET_VALID, /* notBefore in the future */
    FAKE_WRONG_CF,      /* the right bytes under Content-Format 0 (text/plain) */
    FAKE_GARBAGE,       /* CF 281 with bytes that are no PKCS#7 */
    FAKE_TRUNCATED,     /* CF 281 with the first half of a good PKCS#7 */
    FAKE_NO_KEY,        /* /skg: a multipart with the certificate but no key */
    FAKE_ENDLESS_503,   /* 5.03 with Max-Age 0, every time */
    FAKE_LONG_503,      /* 5.03 with a Max-Age of a day */
    FAKE_WRONG_SUBJECT, /* a certificate with another Subject */
    FAKE_CHANGED_SAN,   /* a certificate with another subjectAltName */
    FAKE_CASE_SUBJECT,  /* the Subject with its CN in upper case (equal to X509_NAME_cmp) */
    FAKE_BAD_REQUEST,   /* 4.00 with a diagnostic payload */
};

#define FAKE_DIAGNOSTIC "CSR rejected by policy 7"

struct fake_server {
    EVP_PKEY *ca_key; /* the test CA the client trusts */
    X509 *ca;
    EVP_PKEY *rogue_key; /* a CA nobody trusts */
    X509 *rogue;
    enum fake_answer answer; /* for requests to @target */
    const char *target;      /* "/est/sen", ...; NULL: every path is good */
    unsigned requests;       /* requests to @target seen */
    unsigned total;          /* all requests seen */
};

/* Makes both CAs; writes the trusted one as PEM to @ca_pem. */
bool fake_server_init(struct fake_server *fs, const char *ca_pem);
void fake_server_done(struct fake_server *fs);

/* A transport answering from @fs (which must outlive it). */
estc_transport *fake_server_transport(struct fake_server *fs);

/* A self-signed CA certificate with @cn for @key. */
X509 *fake_make_ca(EVP_PKEY *key, const char *cn);

#endif
