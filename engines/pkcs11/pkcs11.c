/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PKCS#11 driver: keys and certificates in a token, addressed by RFC 7512
 * URIs ("pkcs11:token=T;object=K;pin-value=1234?module-path=/usr/lib/x.so").
 *
 * The framework parses the addresses; p11-kit matches tokens and loads the
 * modules. This file holds the prologue every operation runs and the
 * driver's entry points; see p11_internal.h for the other files.
 */
#include "ckr.h"
#include "p11_internal.h"

#include <openssl/crypto.h>

#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* The prologue                                                              */
/* ------------------------------------------------------------------------ */

/*
 * What every operation does first: read the attributes of @addr, check what
 * @needs (enum p11_need) asks of them, and with P11_TOKEN find the token,
 * open its session and log in (and with P11_USER make sure the user is
 * logged in). An operation without P11_TOKEN that uses the token checks its
 * own input first and then calls estc__p11_session(). op_end() follows,
 * whatever the result.
 */
static estc_err op_begin(struct p11_op *op, estc_ctx *ctx, void *state, const estc_address *addr,
                         unsigned needs)
{
    memset(op, 0, sizeof(*op));
    op->ctx = ctx;
    op->st = state;
    op->addr = addr;
    op->shown = addr->redacted;
    op->needs = needs;
    estc__p11_check_fork(ctx, op->st);
    estc_err err = estc__p11_uri_load(op);
    if (err == ESTC_OK) {
        err = estc__p11_uri_check(op, needs);
    }
    if (err == ESTC_OK && (needs & P11_TOKEN) != 0) {
        err = estc__p11_session(op);
    }
    return err;
}

/* After a failure that the session state explains (a logout, a closed
 * session, a re-initialized module, a token replaced), repair that state and
 * tell whether to run the operation once more; *@err is then the result of
 * making the token ready again. At most once per operation. */
static bool op_again(struct p11_op *op, estc_err *err)
{
    CK_RV rv = op->rv;
    if (op->retried || !estc__p11_recover(op, *err)) {
        return false;
    }
    /* A debug line per retry: the tests see that none was needed where the
     * session state should have been right at once (after fork()). */
    const char *name = rv != CKR_OK ? estc__ckr_name(rv) : NULL;
    estc_log(op->ctx, ESTC_LOG_DEBUG, "pkcs11: %s: session retry after %s", op->shown,
             name != NULL ? name : "a failure");
    op->retried = true;
    op->rv = CKR_OK;
    *err = (op->needs & P11_TOKEN) != 0 ? estc__p11_session(op) : ESTC_OK;
    return *err == ESTC_OK;
}

static estc_err op_end(struct p11_op *op, estc_err err)
{
    /* Only the PIN and its NUL were written (op_begin() zeroed the rest):
     * cleansing all PIN_MAX bytes cost more than a tenth of the driver's
     * own time per signature. */
    OPENSSL_cleanse(op->pin, op->pin_len + 1);
    estc__p11_uri_clear(&op->uri);
    return err;
}

/* Run @call (which sees `op`) after the prologue, once more after a
 * repairable failure. */
#define P11_RUN(ctx, state, addr, needs, call)                                                     \
    do {                                                                                           \
        struct p11_op op_;                                                                         \
        struct p11_op *op = &op_;                                                                  \
        estc_err err_ = op_begin(op, (ctx), (state), (addr), (needs));                             \
        if (err_ == ESTC_OK) {                                                                     \
            err_ = (call);                                                                         \
            if (op_again(op, &err_)) {                                                             \
                err_ = (call);                                                                     \
            }                                                                                      \
        }                                                                                          \
        return op_end(op, err_);                                                                   \
    } while (0)

/* What the operations need. Key import and certificate store read their
 * input before they touch the token (no P11_TOKEN here). */
#define NEEDS_KEY_GENERATE (P11_LABEL | P11_TYPE_KEY | P11_TOKEN | P11_USER)
#define NEEDS_KEY_IMPORT (P11_LABEL | P11_TYPE_KEY | P11_USER)
#define NEEDS_KEY_PUBLIC (P11_OBJECT | P11_TYPE_KEY | P11_TOKEN)
#define NEEDS_KEY_SIGN (P11_OBJECT | P11_TYPE_PRIVATE | P11_TOKEN | P11_USER)
#define NEEDS_KEY_REMOVE (P11_OBJECT | P11_TYPE_KEY | P11_TOKEN | P11_USER)
#define NEEDS_CERT_STORE (P11_LABEL | P11_TYPE_CERT)
#define NEEDS_CERT_LOAD (P11_OBJECT | P11_TYPE_CERT | P11_TOKEN)
#define NEEDS_CERT_REMOVE (P11_OBJECT | P11_TYPE_CERT | P11_TOKEN)
/* Private keys are visible to the user only. */
#define NEEDS_USER_FOR(kind) ((kind) == ESTC_OBJ_KEY ? P11_USER : 0u)

/* ------------------------------------------------------------------------ */
/* The driver operations                                                     */
/* ------------------------------------------------------------------------ */

static estc_err p11_init(estc_ctx *ctx, void *state)
{
    (void)ctx;
    struct p11_state *st = state;
    st->pid = getpid();
    return ESTC_OK;
}

static void p11_cleanup(estc_ctx *ctx, void *state)
{
    (void)ctx;
    estc__p11_state_free(state);
}

static estc_err p11_key_generate(estc_ctx *ctx, void *state, const estc_address *addr,
                                 estc_key_type type)
{
    P11_RUN(ctx, state, addr, NEEDS_KEY_GENERATE, estc__p11_key_generate(op, type));
}

static estc_err p11_key_import(estc_ctx *ctx, void *state, const estc_address *addr,
                               const uint8_t *pkcs8, size_t pkcs8_len)
{
    P11_RUN(ctx, state, addr, NEEDS_KEY_IMPORT, estc__p11_key_import(op, pkcs8, pkcs8_len));
}

static estc_err p11_key_public(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *spki)
{
    P11_RUN(ctx, state, addr, NEEDS_KEY_PUBLIC, estc__p11_key_public(op, spki));
}

static estc_err p11_key_sign(estc_ctx *ctx, void *state, const estc_address *addr, estc_sig_alg alg,
                             estc_hash hash, const uint8_t *digest, size_t digest_len,
                             estc_buf *sig)
{
    P11_RUN(ctx, state, addr, NEEDS_KEY_SIGN,
            estc__p11_key_sign(op, alg, hash, digest, digest_len, sig));
}

static estc_err p11_key_remove(estc_ctx *ctx, void *state, const estc_address *addr)
{
    P11_RUN(ctx, state, addr, NEEDS_KEY_REMOVE, estc__p11_key_remove(op));
}

static estc_err p11_cert_store(estc_ctx *ctx, void *state, const estc_address *addr,
                               estc_obj_kind kind, const uint8_t *der, size_t der_len)
{
    P11_RUN(ctx, state, addr, NEEDS_CERT_STORE, estc__p11_cert_store(op, kind, der, der_len));
}

static estc_err p11_cert_load(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *der)
{
    P11_RUN(ctx, state, addr, NEEDS_CERT_LOAD, estc__p11_cert_load(op, der));
}

static estc_err p11_cert_remove(estc_ctx *ctx, void *state, const estc_address *addr)
{
    P11_RUN(ctx, state, addr, NEEDS_CERT_REMOVE, estc__p11_cert_remove(op));
}

static estc_err p11_exists(estc_ctx *ctx, void *state, const estc_address *addr, estc_obj_kind kind,
                           bool *found)
{
    P11_RUN(ctx, state, addr, P11_OBJECT | P11_TOKEN | NEEDS_USER_FOR(kind),
            estc__p11_exists(op, kind, found));
}

static estc_err p11_list(estc_ctx *ctx, void *state, const estc_address *prefix, estc_obj_kind kind,
                         estc_list_fn fn, void *arg)
{
    P11_RUN(ctx, state, prefix, P11_TOKEN | NEEDS_USER_FOR(kind),
            estc__p11_list(op, kind, fn, arg));
}

static estc_err p11_address_derive(estc_ctx *ctx, void *state, const estc_address *prefix,
                                   estc_obj_kind kind, const char *name, char **addr)
{
    (void)kind;
    P11_RUN(ctx, state, prefix, 0, estc__p11_derive(op, name, addr));
}

const struct estc_driver estc__driver_pkcs11 = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "pkcs11",
    .description = "PKCS#11 tokens (RFC 7512 URIs, p11-kit)",
    .state_size = sizeof(struct p11_state),
    .caps = ESTC_CAP_ATTRIBUTES,
    .init = p11_init,
    .cleanup = p11_cleanup,
    .key_generate = p11_key_generate,
    .key_import = p11_key_import,
    .key_public = p11_key_public,
    .key_sign = p11_key_sign,
    .key_remove = p11_key_remove,
    .cert_store = p11_cert_store,
    .cert_load = p11_cert_load,
    .cert_remove = p11_cert_remove,
    .list = p11_list,
    .exists = p11_exists,
    .address_derive = p11_address_derive,
};
