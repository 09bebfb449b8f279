/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc — error codes shared by every part of the library.
 *
 * Every public function that can fail returns an estc_err. ESTC_OK is zero, so
 * `if (err != ESTC_OK)` is the only test a caller needs. A human-readable
 * detail of the last failure (which address, which underlying code) is kept
 * in the estc_ctx; see estc_ctx_error_detail() in <estc/engine.h>.
 */
#ifndef ESTC_ERROR_H
#define ESTC_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum estc_err {
    ESTC_OK = 0,
    ESTC_ERR_INVALID_ARG,    /* a NULL or out-of-range argument */
    ESTC_ERR_NOMEM,          /* an allocation failed */
    ESTC_ERR_BAD_ADDRESS,    /* empty, over-long or malformed engine address */
    ESTC_ERR_UNKNOWN_SCHEME, /* no driver is registered for the address scheme */
    ESTC_ERR_EXISTS,         /* the scheme or object exists already */
    ESTC_ERR_NOT_FOUND,      /* no object at that address */
    ESTC_ERR_UNSUPPORTED,    /* the engine cannot do this (key type, operation) */
    ESTC_ERR_ENGINE,         /* the engine failed; the detail names its own code */
    ESTC_ERR_AUTH,           /* wrong or missing PIN / authorization */
    ESTC_ERR_IO,             /* a file or stream operation failed */
    ESTC_ERR_CRYPTO,         /* a cryptographic operation failed */
    ESTC_ERR_FORMAT,         /* data is malformed (DER, PEM, CBOR, state file) */
    ESTC_ERR_STATE,          /* the call is not valid in the current state */
    ESTC_ERR_DRIVER,         /* a driver is incomplete or of another API version */
    ESTC_ERR_TRANSPORT,      /* the CoAP / DTLS transport failed */
    ESTC_ERR_TIMEOUT,        /* no answer in time */
    ESTC_ERR_PROTOCOL,       /* the peer broke the protocol */
    ESTC_ERR_SERVER,         /* the server answered with an error code */
    ESTC_ERR_VALIDATION,     /* something the server sent failed validation */
    ESTC_ERR_LIMIT,          /* a size or retry bound was exceeded */
    ESTC_ERR_CANCELLED,      /* the caller's cancel callback ended the operation */
} estc_err;

/* Number of codes above; handy for tests that walk every code. */
#define ESTC_ERR_COUNT 22

/**
 * estc_strerror() - a short English description of an error code.
 *
 * Never returns NULL: unknown codes give "unknown error". The string is static.
 */
const char *estc_strerror(estc_err err);

/**
 * estc_err_name() - the symbolic name of an error code ("ESTC_ERR_NOT_FOUND").
 *
 * Never returns NULL: unknown codes give "ESTC_ERR_?". The string is static.
 */
const char *estc_err_name(estc_err err);

#ifdef __cplusplus
}
#endif
#endif
