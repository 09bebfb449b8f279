/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal codecs for what an EST-coaps server sends (RFC 9148): certs-only
 * PKCS#7, single X.509 certificates, multipart-core CBOR, CSR attributes and
 * CoRE link-format discovery answers; plus the Content-Format table.
 *
 * Every parser is strict and bounds-checked: it reads only the @len bytes it
 * is given, rejects trailing data, BER-only encodings (indefinite lengths,
 * non-minimal length octets) and anything beyond the size caps below, and
 * returns ESTC_ERR_FORMAT for malformed input. Outputs are owned by the caller
 * and released with the matching *_free(); on failure an output is left empty.
 */
#ifndef ESTC_CORE_CODEC_H
#define ESTC_CORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <estc/engine.h>
#include <estc/error.h>

/* ------------------------------------------------------------------------ */
/* Content-Formats (RFC 9148 §8.1, RFC 6690, RFC 8710)                       */
/* ------------------------------------------------------------------------ */

#define ESTC__CF_NONE (-1) /* no Content-Format / Accept option */

enum {
    ESTC__CF_LINK_FORMAT = 40,       /* application/link-format */
    ESTC__CF_MULTIPART_CORE = 62,    /* application/multipart-core */
    ESTC__CF_PKCS7_SERVER_KEY = 280, /* application/pkcs7-mime; server-generated-key */
    ESTC__CF_PKCS7_CERTS = 281,      /* application/pkcs7-mime; certs-only */
    ESTC__CF_PKCS8 = 284,            /* application/pkcs8 */
    ESTC__CF_CSRATTRS = 285,         /* application/csrattrs */
    ESTC__CF_PKCS10 = 286,           /* application/pkcs10 */
    ESTC__CF_PKIX_CERT = 287,        /* application/pkix-cert */
};

/* Media type of @cf ("application/pkcs10"), NULL when not in the table. */
const char *estc__cf_media_type(int cf);
/* Whether @cf carries certificates (281 or 287). */
bool estc__cf_is_cert(int cf);
/* The largest payload accepted for @cf (0 for an unknown format). */
size_t estc__cf_max_size(int cf);

/* ------------------------------------------------------------------------ */
/* Size caps                                                                 */
/* ------------------------------------------------------------------------ */

#define ESTC__MAX_CERTS_SIZE (256u * 1024u) /* a 281 or 287 payload */
#define ESTC__MAX_CERTS 64                  /* certificates in one bag */
#define ESTC__MAX_MULTIPART_SIZE (256u * 1024u)
#define ESTC__MAX_MULTIPART_PARTS 8 /* representations, not array items */
#define ESTC__MAX_CSRATTRS_SIZE (16u * 1024u)
#define ESTC__MAX_CSRATTRS 64       /* items in the SEQUENCE */
#define ESTC__MAX_CSRATTR_VALUES 32 /* values of one attribute */
#define ESTC__MAX_LINK_FORMAT_SIZE (16u * 1024u)
#define ESTC__MAX_LINK_CT 8    /* ct values kept per link */
#define ESTC__MAX_DER_DEPTH 16 /* nesting accepted inside certificates et al. */
#define ESTC__OID_TEXT_MAX 128 /* dotted OID text, NUL included */

/* ------------------------------------------------------------------------ */
/* DER reader (shared by the ASN.1 codecs, exposed for the client core)       */
/* ------------------------------------------------------------------------ */

/* A cursor over DER bytes. */
typedef struct estc__der {
    const uint8_t *p;
    size_t len;
} estc__der;

/* One element read by estc__der_next(). */
typedef struct estc__der_tlv {
    uint8_t tag;        /* the identifier octet (class, constructed bit, number) */
    const uint8_t *tlv; /* the whole element: identifier, length and contents */
    size_t tlv_len;
    estc__der contents; /* the contents octets */
} estc__der_tlv;

#define ESTC__DER_INTEGER 0x02
#define ESTC__DER_OCTET_STRING 0x04
#define ESTC__DER_NULL 0x05
#define ESTC__DER_OID 0x06
#define ESTC__DER_SEQUENCE 0x30
#define ESTC__DER_SET 0x31
#define ESTC__DER_CTX_CONS(n) ((uint8_t)(0xa0 | (n)))
#define ESTC__DER_CTX_PRIM(n) ((uint8_t)(0x80 | (n)))

/*
 * Read the next element at @cur and advance past it. Only low tag numbers
 * (< 31) and definite, minimally encoded lengths are accepted.
 * ESTC_ERR_FORMAT when @cur is empty or the element is malformed.
 */
estc_err estc__der_next(estc__der *cur, estc__der_tlv *tlv);
/* estc__der_next() that also insists on the identifier octet @tag. */
estc_err estc__der_expect(estc__der *cur, uint8_t tag, estc__der_tlv *tlv);
/*
 * Check that @tlv's contents are well-formed DER all the way down (every
 * constructed element parses, to ESTC__MAX_DER_DEPTH). ESTC_ERR_FORMAT.
 */
estc_err estc__der_check_tree(const estc__der_tlv *tlv);
/*
 * Dotted text of an OBJECT IDENTIFIER's contents ("1.2.840.113549.1.9.7").
 * ESTC_ERR_FORMAT for an empty, non-minimal or over-long OID.
 */
estc_err estc__der_oid_text(const estc__der *contents, char text[ESTC__OID_TEXT_MAX]);

/* ------------------------------------------------------------------------ */
/* Certificates: CF 281 (certs-only PKCS#7) and CF 287 (one DER certificate) */
/* ------------------------------------------------------------------------ */

/* A list of owned DER blobs. */
typedef struct estc__der_list {
    estc_buf *items;
    size_t n;
} estc__der_list;

/* Wipe and free every item and the array; leaves the list empty. NULL ok. */
void estc__der_list_free(estc__der_list *list);
/* Appends a copy of @der to @list; on failure the list is unchanged. */
estc_err estc__der_list_add(estc__der_list *list, const uint8_t *der, size_t len);

/*
 * CF 281: a degenerate ("certs-only") CMS SignedData (RFC 5652, RFC 7030
 * §4.1.3): no digest algorithms, id-data without content, no signers, at
 * least one certificate; CRLs are allowed and ignored. Each certificate is
 * returned as its DER, in the order sent, and must parse as X.509.
 * ESTC_ERR_FORMAT for anything else, ESTC_ERR_LIMIT beyond the caps,
 * ESTC_ERR_NOMEM, ESTC_ERR_INVALID_ARG.
 */
estc_err estc__codec_certs_only(const uint8_t *in, size_t len, estc__der_list *out);

/* CF 287: exactly one DER X.509 certificate, no trailing bytes. Same errors. */
estc_err estc__codec_pkix_cert(const uint8_t *in, size_t len, estc__der_list *out);

/*
 * Certificates by Content-Format: 281 or 287. ESTC_ERR_PROTOCOL for any
 * other @cf (a server answering in a format we did not accept), else as above.
 */
estc_err estc__codec_certs(int cf, const uint8_t *in, size_t len, estc__der_list *out);
/* Receives each certificate estc__codec_certs_keep() parsed, with its DER
 * as listed; it may take a reference to @x. */
struct x509_st;
typedef void (*estc__cert_keep_fn)(void *arg, const estc_buf *der, struct x509_st *x);
/* estc__codec_certs() that hands each certificate it parsed to @keep, so
 * that the caller need not parse it again (OpenSSL 3.0 decodes the public
 * key of every parse through a new decoder). */
estc_err estc__codec_certs_keep(int cf, const uint8_t *in, size_t len, estc__der_list *out,
                                estc__cert_keep_fn keep, void *arg);

/* ------------------------------------------------------------------------ */
/* CF 62: multipart-core (RFC 8710)                                          */
/* ------------------------------------------------------------------------ */

typedef struct estc__multipart_part {
    int cf;        /* the Content-Format of the part, 0..65535 */
    bool present;  /* false when the server sent null (an absent part) */
    estc_buf data; /* the representation (empty when absent) */
} estc__multipart_part;

typedef struct estc__multipart {
    estc__multipart_part *parts;
    size_t n;
} estc__multipart;

/*
 * A definite-length CBOR array of an even number of items: uint Content-Format
 * (< 65536) followed by a definite-length byte string or null. No tags, no
 * nesting, no indefinite lengths, no trailing data. ESTC_ERR_FORMAT,
 * ESTC_ERR_LIMIT (more than ESTC__MAX_MULTIPART_PARTS parts or too big),
 * ESTC_ERR_NOMEM, ESTC_ERR_INVALID_ARG.
 */
estc_err estc__codec_multipart(const uint8_t *in, size_t len, estc__multipart *out);

/* The first part of Content-Format @cf, or NULL. */
const estc__multipart_part *estc__multipart_find(const estc__multipart *mp, int cf);

/* Wipe (parts may hold a private key) and free; leaves @mp empty. NULL ok. */
void estc__multipart_free(estc__multipart *mp);

/*
 * Encode @n parts as multipart-core (for servers and tests). An absent part
 * (present false) is encoded as null. ESTC_ERR_INVALID_ARG / NOMEM / LIMIT.
 */
estc_err estc__multipart_encode(const estc__multipart_part *parts, size_t n, estc_buf *out);

/* ------------------------------------------------------------------------ */
/* CF 285: CSR attributes (RFC 7030 §4.5.2)                                  */
/* ------------------------------------------------------------------------ */

typedef enum estc__csrattr_kind {
    ESTC__CSRATTR_OID = 1,   /* a bare OID: "put this in the CSR" (type, algorithm) */
    ESTC__CSRATTR_ATTRIBUTE, /* an Attribute: type plus a SET of values */
} estc__csrattr_kind;

typedef struct estc__csrattr {
    estc__csrattr_kind kind;
    char oid[ESTC__OID_TEXT_MAX]; /* dotted text of the OID or attribute type */
    estc_buf oid_der;             /* the OBJECT IDENTIFIER element, DER */
    estc__der_list values;        /* ATTRIBUTE only: each value's DER element */
} estc__csrattr;

typedef struct estc__csrattrs {
    estc__csrattr *items;
    size_t n;
} estc__csrattrs;

/*
 * CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF CHOICE { OBJECT IDENTIFIER,
 * Attribute { type OID, values SET SIZE (1..MAX) OF ANY } }. An empty
 * SEQUENCE (or an empty payload, which RFC 7030 allows for "none") gives an
 * empty list. ESTC_ERR_FORMAT, ESTC_ERR_LIMIT, ESTC_ERR_NOMEM,
 * ESTC_ERR_INVALID_ARG.
 */
estc_err estc__codec_csrattrs(const uint8_t *in, size_t len, estc__csrattrs *out);

/* The first item whose OID text is @oid, or NULL. */
const estc__csrattr *estc__csrattrs_find(const estc__csrattrs *attrs, const char *oid);

/* Free everything; leaves @attrs empty. NULL ok. */
void estc__csrattrs_free(estc__csrattrs *attrs);

/*
 * What a CSR builder takes from the attributes it understands: the signature
 * hash, the key type asked for, whether a challengePassword is wanted, and
 * the extensions of an extensionRequest attribute (DER Extensions, to be
 * merged into the CSR's own). Unknown items are ignored (RFC 7030 §4.5.2:
 * "the client ... MAY ignore"). Fields not asked for stay 0 / false / empty.
 */
typedef struct estc__csr_hints {
    estc_hash hash;             /* 0: not asked */
    estc_key_type key_type;     /* 0: not asked (or not one we can make) */
    bool challenge_password;    /* 1.2.840.113549.1.9.7 was listed */
    estc_buf extension_request; /* DER Extensions from 1.2.840.113549.1.9.14 */
} estc__csr_hints;

/* Fill @hints from @attrs. ESTC_ERR_INVALID_ARG / NOMEM. */
estc_err estc__csrattrs_hints(const estc__csrattrs *attrs, estc__csr_hints *hints);
void estc__csr_hints_free(estc__csr_hints *hints);

/* ------------------------------------------------------------------------ */
/* CF 40: CoRE link-format discovery (RFC 6690, RFC 9148 §4.1)                */
/* ------------------------------------------------------------------------ */

typedef enum estc__est_resource {
    ESTC__EST_CRTS = 0,
    ESTC__EST_SEN,
    ESTC__EST_SREN,
    ESTC__EST_SKG,
    ESTC__EST_SKC,
    ESTC__EST_ATT,
    ESTC__EST_COUNT,
} estc__est_resource;

/* "crts", "sen", ...; NULL for an out-of-range value. */
const char *estc__est_resource_name(estc__est_resource res);

typedef struct estc__est_link {
    bool found;
    /* For an absolute coaps:// link: the host (IPv6 without brackets) and
     * port to use instead of the discovery server. NULL / 0 otherwise. */
    char *host;
    uint16_t port;
    char *path;                /* "/est/crts", with "?query" when the link had one */
    int ct[ESTC__MAX_LINK_CT]; /* the ct values, in order */
    size_t n_ct;
} estc__est_link;

typedef struct estc__discovery {
    estc__est_link res[ESTC__EST_COUNT];
} estc__discovery;

/*
 * Parse a link-format document and keep the first link for each rt=ace.est.*
 * resource type. Relative references are resolved against
 * "/.well-known/core"; absolute links are kept only with the coaps scheme
 * (others are ignored, as are links with user info or dot segments).
 * Whitespace is tolerated around the ',' separators only.
 * ESTC_ERR_FORMAT (bad syntax, NUL or control bytes), ESTC_ERR_LIMIT (too
 * big), ESTC_ERR_NOMEM, ESTC_ERR_INVALID_ARG.
 */
estc_err estc__codec_link_format(const char *in, size_t len, estc__discovery *out);

/* Free every link; leaves @disc empty. NULL ok. */
void estc__discovery_free(estc__discovery *disc);

#endif
