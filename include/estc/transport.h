/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc — the transport under the EST client: one CoAP request, one response.
 *
 * The EST core speaks to its server through an opaque estc_transport. The
 * default implementation is CoAP over DTLS 1.2 with libcoap (certificate
 * mode, confirmable requests, one DTLS session reused for consecutive
 * requests, block-wise transfers both ways). Other implementations (an
 * in-process one for tests, an LwM2M client's own bootstrap connection) are
 * plugged in with estc_transport_new() and a struct of operations.
 *
 * Threads: a transport is used by one thread at a time.
 */
#ifndef ESTC_TRANSPORT_H
#define ESTC_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <estc/engine.h>
#include <estc/error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct estc_transport estc_transport;

/* CoAP request methods (RFC 7252 §12.1.1 codes). */
typedef enum estc_coap_method {
    ESTC_COAP_GET = 1,
    ESTC_COAP_POST = 2,
    ESTC_COAP_PUT = 3,
    ESTC_COAP_DELETE = 4,
} estc_coap_method;

/* "No Content-Format" / "no Accept option". */
#define ESTC_CF_NONE (-1)

/* Response codes as class * 100 + detail: 205 is 2.05 Content. */
#define ESTC_COAP_CODE(cls, detail) ((cls)*100 + (detail))

/* One request. The bytes are only read during estc_transport_request(). */
typedef struct estc_request {
    estc_coap_method method;
    /* "/est/crts" or "/.well-known/core?rt=ace.est*": '/'-separated Uri-Path
     * segments, then '&'-separated Uri-Query items, each percent-decoded. */
    const char *path;
    int content_format; /* of the payload, ESTC_CF_NONE without one */
    int accept;         /* ESTC_CF_NONE: no Accept option */
    const uint8_t *payload;
    size_t payload_len;
} estc_request;

/* One response; the payload is owned (estc_response_clear() frees it). */
typedef struct estc_response {
    int code;           /* 205, 204, 404, 503, ... */
    int content_format; /* ESTC_CF_NONE when the response had none */
    estc_buf payload;   /* the whole body, block-wise transfers reassembled */
    uint32_t max_age;   /* seconds; 60 (the CoAP default) when absent */
    bool has_max_age;   /* the response carried a Max-Age option */
} estc_response;

/** estc_response_clear() - free the payload and reset all fields. NULL ok. */
void estc_response_clear(estc_response *resp);

/* ------------------------------------------------------------------------ */
/* Implementations                                                           */
/* ------------------------------------------------------------------------ */

/*
 * Version 2 added @tls_unique at the end of estc_transport_ops. Structs of
 * version 1 (without it) are still accepted: the library reads a struct only
 * up to the fields of its api_version.
 */
#define ESTC_TRANSPORT_API_VERSION 2

/* Longest tls-unique value: a TLS 1.2 Finished is 12 bytes (RFC 5246 §7.4.9)
 * unless a cipher suite says otherwise; room for any hash-sized one. */
#define ESTC_TLS_UNIQUE_MAX 64

/*
 * The operations of one transport implementation. @request fills @resp (which
 * arrives cleared) and returns ESTC_OK for any CoAP response, success or not;
 * failures to get one are ESTC_ERR_TRANSPORT, ESTC_ERR_TIMEOUT,
 * ESTC_ERR_LIMIT (response bigger than allowed), ESTC_ERR_VALIDATION (the
 * server's certificate or identity), ESTC_ERR_PROTOCOL. Detail text goes to
 * @detail (a buffer of @detail_len bytes, already empty).
 */
typedef struct estc_transport_ops {
    unsigned api_version; /* ESTC_TRANSPORT_API_VERSION */
    const char *name;     /* "coap", "in-process", ... */
    estc_err (*request)(void *impl, const estc_request *req, estc_response *resp, char *detail,
                        size_t detail_len);
    /* Forget the current session; the next request starts a new one. May be NULL. */
    void (*reset)(void *impl);
    /* Release @impl. May be NULL. */
    void (*free)(void *impl);

    /* ---- api_version 2 ---- */
    /* Complete the handshake of the current session (opening one when there
     * is none, sending no request) and put its tls-unique channel binding
     * (RFC 5929 §3.1: the first Finished message of the latest handshake)
     * into @out (@out_size bytes), its length into @out_len. The next
     * request must go on that same session. Errors as for @request. May be
     * NULL: the transport has no such binding (proof-of-possession then
     * fails with ESTC_ERR_UNSUPPORTED). */
    estc_err (*tls_unique)(void *impl, uint8_t *out, size_t out_size, size_t *out_len,
                           char *detail, size_t detail_len);
} estc_transport_ops;

/**
 * estc_transport_new() - wrap an implementation as a transport.
 * @ops: static operations; @ops->request is required.
 * @impl: handed to every operation; released by @ops->free with the transport
 *        (also when this call fails with ESTC_ERR_NOMEM).
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL @ops, @ops->request or @out),
 * ESTC_ERR_DRIVER (an api_version other than 1 or 2) or ESTC_ERR_NOMEM.
 */
estc_err estc_transport_new(const estc_transport_ops *ops, void *impl, estc_transport **out);

/**
 * estc_transport_free() - release the transport and its implementation. NULL ok.
 */
void estc_transport_free(estc_transport *t);

/**
 * estc_transport_request() - send one request and wait for its response.
 * @resp: zero-initialised ({0}) or holding an earlier response, which is
 *        freed first; on failure left cleared.
 *
 * Returns ESTC_OK when a response arrived (look at @resp->code),
 * ESTC_ERR_INVALID_ARG (NULL @t, @req, @resp or @req->path, a path not
 * starting with '/', a bad method, a Content-Format out of 0..65535, NULL
 * payload with a length), or the implementation's errors (see
 * estc_transport_ops). The detail of a failure is kept until the next request:
 * estc_transport_error_detail().
 */
estc_err estc_transport_request(estc_transport *t, const estc_request *req, estc_response *resp);

/**
 * estc_transport_tls_unique() - the tls-unique value of the session the next
 * request goes on, the handshake completed first when needed.
 * @out: at least ESTC_TLS_UNIQUE_MAX bytes (@out_size).
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL argument), ESTC_ERR_UNSUPPORTED
 * (the transport has no tls_unique operation: api_version 1 or NULL), or the
 * implementation's errors with estc_transport_error_detail().
 */
estc_err estc_transport_tls_unique(estc_transport *t, uint8_t *out, size_t out_size,
                                   size_t *out_len);

/** estc_transport_reset() - drop the current session (a new one on next use). */
void estc_transport_reset(estc_transport *t);

/** estc_transport_error_detail() - detail of the last failure; never NULL. */
const char *estc_transport_error_detail(const estc_transport *t);

/* ------------------------------------------------------------------------ */
/* The default: CoAP over DTLS 1.2 with libcoap                              */
/* ------------------------------------------------------------------------ */

typedef struct estc_coap_config {
    /* "coaps://host[:port]" (port 5684 by default; IPv6 in brackets). A path
     * in the URI is ignored: paths go with each request. */
    const char *server;
    /* PEM file of the trust anchors for the server's chain. Required: there
     * is no way to skip verification. */
    const char *trust_file;
    /* The name or IP address that the server's certificate must carry in its
     * subjectAltName (dNSName / iPAddress; a CN is not enough). NULL: the
     * host of @server. A certificate without it is still accepted when its
     * chain verified against @trust_file and it carries the extended key
     * usage id-kp-cmcRA (1.3.6.1.5.5.7.3.28): an EST registration authority
     * (RFC 7030 §3.6.1). */
    const char *identity;
    /* Client certificate and private key (PEM files, the key may be a PEM key
     * reference for the estc provider). Both or neither. */
    const char *cert_file;
    const char *key_file;
    /* Whole-exchange time-out in milliseconds (handshake, retransmissions,
     * all blocks); 0 means 30000. */
    unsigned timeout_ms;
    /* Block size exponent for Block1 and Block2 (block = 2^(szx+4) bytes,
     * 0..6); values above 6 mean 6 (1024 bytes). */
    unsigned block_szx;
    /* Largest response body accepted; 0 means 256 KiB. A larger one ends the
     * exchange with ESTC_ERR_LIMIT. */
    size_t max_response;
    /* Log lines of the transport (never key material). NULL: silent. */
    estc_log_fn log_fn;
    void *log_arg;
    /* Asked at least every 100 ms while the transport waits (handshake,
     * answers, retransmissions); when it returns true the exchange ends with
     * ESTC_ERR_CANCELLED and the session is dropped. NULL: never cancelled.
     * It runs on the caller's thread and must not call into the transport. */
    bool (*cancel)(void *arg);
    void *cancel_arg;
} estc_coap_config;

/**
 * estc_transport_coap_new() - the libcoap DTLS transport for @cfg.
 *
 * Nothing is sent until the first request; the strings of @cfg are copied.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL @cfg or @out, no server or
 * trust file, a key without a certificate or the reverse, a URI that is not
 * coaps:// with a host, a bad port), ESTC_ERR_IO (a file cannot be read),
 * ESTC_ERR_UNSUPPORTED (libcoap without DTLS) or ESTC_ERR_NOMEM.
 */
estc_err estc_transport_coap_new(const estc_coap_config *cfg, estc_transport **out);

#ifdef __cplusplus
}
#endif
#endif
