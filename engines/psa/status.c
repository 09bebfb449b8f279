/* SPDX-License-Identifier: Apache-2.0 */
/*
 * psa: PSA status codes as estc errors, and bringing PSA up.
 *
 * PSA keeps its state per process: psa_crypto_init() is idempotent, and the
 * driver never calls mbedtls_psa_crypto_free(), which would pull the keys
 * from under other users of PSA in the same process.
 */
#include <sys/stat.h>

#include "psa_internal.h"

static const char *status_name(psa_status_t st)
{
    switch (st) {
    case PSA_SUCCESS:
        return "PSA_SUCCESS";
    case PSA_ERROR_GENERIC_ERROR:
        return "PSA_ERROR_GENERIC_ERROR";
    case PSA_ERROR_NOT_SUPPORTED:
        return "PSA_ERROR_NOT_SUPPORTED";
    case PSA_ERROR_NOT_PERMITTED:
        return "PSA_ERROR_NOT_PERMITTED";
    case PSA_ERROR_BUFFER_TOO_SMALL:
        return "PSA_ERROR_BUFFER_TOO_SMALL";
    case PSA_ERROR_ALREADY_EXISTS:
        return "PSA_ERROR_ALREADY_EXISTS";
    case PSA_ERROR_DOES_NOT_EXIST:
        return "PSA_ERROR_DOES_NOT_EXIST";
    case PSA_ERROR_BAD_STATE:
        return "PSA_ERROR_BAD_STATE";
    case PSA_ERROR_INVALID_ARGUMENT:
        return "PSA_ERROR_INVALID_ARGUMENT";
    case PSA_ERROR_INSUFFICIENT_MEMORY:
        return "PSA_ERROR_INSUFFICIENT_MEMORY";
    case PSA_ERROR_INSUFFICIENT_STORAGE:
        return "PSA_ERROR_INSUFFICIENT_STORAGE";
    case PSA_ERROR_COMMUNICATION_FAILURE:
        return "PSA_ERROR_COMMUNICATION_FAILURE";
    case PSA_ERROR_STORAGE_FAILURE:
        return "PSA_ERROR_STORAGE_FAILURE";
    case PSA_ERROR_HARDWARE_FAILURE:
        return "PSA_ERROR_HARDWARE_FAILURE";
    case PSA_ERROR_CORRUPTION_DETECTED:
        return "PSA_ERROR_CORRUPTION_DETECTED";
    case PSA_ERROR_INSUFFICIENT_ENTROPY:
        return "PSA_ERROR_INSUFFICIENT_ENTROPY";
    case PSA_ERROR_INVALID_SIGNATURE:
        return "PSA_ERROR_INVALID_SIGNATURE";
    case PSA_ERROR_INVALID_PADDING:
        return "PSA_ERROR_INVALID_PADDING";
    case PSA_ERROR_INSUFFICIENT_DATA:
        return "PSA_ERROR_INSUFFICIENT_DATA";
    case PSA_ERROR_INVALID_HANDLE:
        return "PSA_ERROR_INVALID_HANDLE";
    case PSA_ERROR_DATA_CORRUPT:
        return "PSA_ERROR_DATA_CORRUPT";
    case PSA_ERROR_DATA_INVALID:
        return "PSA_ERROR_DATA_INVALID";
    default:
        return "PSA_ERROR_(unknown)";
    }
}

estc_err psa__fail(estc_ctx *ctx, const char *addr, const char *call, psa_status_t st)
{
    estc_err err;
    switch (st) {
    case PSA_ERROR_DOES_NOT_EXIST:
    case PSA_ERROR_INVALID_HANDLE:
        err = ESTC_ERR_NOT_FOUND;
        break;
    case PSA_ERROR_ALREADY_EXISTS:
        err = ESTC_ERR_EXISTS;
        break;
    case PSA_ERROR_NOT_SUPPORTED:
        err = ESTC_ERR_UNSUPPORTED;
        break;
    case PSA_ERROR_INSUFFICIENT_MEMORY:
        err = ESTC_ERR_NOMEM;
        break;
    default:
        err = ESTC_ERR_ENGINE;
        break;
    }
    if (st == PSA_ERROR_DOES_NOT_EXIST || st == PSA_ERROR_INVALID_HANDLE)
        return estc_error(ctx, err, "%s: %s: %s (no such object)", addr, call, status_name(st));
    return estc_error(ctx, err, "%s: %s: %d %s", addr, call, (int)st, status_name(st));
}

estc_err psa__init(estc_ctx *ctx, struct psa_state *st, const char *addr)
{
    if (st->ready)
        return ESTC_OK;
    psa_status_t s = psa_crypto_init();
    if (s != PSA_SUCCESS)
        return psa__fail(ctx, addr, "psa_crypto_init", s);
    st->ready = true;
    /* mbed TLS keeps key files in the current folder, unencrypted. */
    struct stat sb;
    if (stat(".", &sb) == 0 && (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        estc_log(ctx, ESTC_LOG_WARNING,
                 "psa: the current folder, where PSA keeps its key files, is open to other "
                 "users (mode %03o); use a private 0700 folder",
                 (unsigned)(sb.st_mode & 0777));
    return ESTC_OK;
}
