/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The "tpm2:" driver: keys as persistent objects under an ECC P-256 storage
 * primary key, certificates and trust-store certificates in NV indices, all
 * through tpm2-tss ESAPI. See docs/engines/tpm2.md for the address syntax.
 *
 * This file holds the driver table and its entry points: each checks its
 * arguments, runs the one prologue (op_begin) and hands the operation to
 * keys.c, nv.c or addr.c (see tpm2_internal.h).
 */
#include "tpm2_internal.h"
#include "util.h"

/* Flag of op_begin(), next to the enum addr_type flags: also connect to the
 * TPM of the address. */
#define OP_CONNECT (1u << 8)

/*
 * The prologue of every operation: reads the attributes of @addr, checks
 * that it names one of the address types in @flags (ADDR_KEY, ADDR_NV,
 * ADDR_PREFIX) and, with OP_CONNECT, opens or reuses the connection of its
 * TCTI. Nothing to release afterwards.
 */
static estc_err op_begin(struct tpm2_op *op, estc_ctx *ctx, void *state, const estc_address *addr,
                         unsigned flags)
{
    *op = (struct tpm2_op){.ctx = ctx, .addr = addr, .text = addr->text};
    estc_err err = estc__tpm2_addr_read(ctx, addr, &op->a);
    if (err != ESTC_OK)
        return err;
    unsigned want = flags & (ADDR_PREFIX | ADDR_KEY | ADDR_NV | ADDR_FILE);
    if (!(op->a.type & want))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: %s", op->text,
                          want == (ADDR_KEY | ADDR_FILE)
                              ? "expected a key address (handle=0x81...... or key-file=PATH)"
                          : want == ADDR_NV     ? "expected a certificate address (nv=0x01......)"
                          : want == ADDR_PREFIX ? "expected a prefix (no handle=, nv= or key-file=)"
                                                : "not an object address");
    if (!(flags & OP_CONNECT))
        return ESTC_OK;
    err = estc__tpm2_connect(op, state);
    return err == ESTC_OK ? estc__tpm2_auth_begin(op) : err;
}

/* The epilogue of an operation that op_begin() connected: the passwords of
 * the operation leave the connection and memory. Returns @err. */
static estc_err op_end(struct tpm2_op *op, estc_err err)
{
    estc__tpm2_auth_end(op);
    return err;
}

#define KEY_ADDR (ADDR_KEY | ADDR_FILE)

/* ------------------------------------------------------------------------ */
/* Keys                                                                      */
/* ------------------------------------------------------------------------ */

static estc_err tpm2_key_generate(estc_ctx *ctx, void *state, const estc_address *addr,
                                  estc_key_type type)
{
    if (!estc__tpm2_key_type_known(type))
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown key type %d", addr->text,
                          (int)type);
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, KEY_ADDR | OP_CONNECT);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_key_generate(&op, type) : err);
}

static estc_err tpm2_key_import(estc_ctx *ctx, void *state, const estc_address *addr,
                                const uint8_t *pkcs8, size_t pkcs8_len)
{
    if (pkcs8 == NULL || pkcs8_len == 0 || pkcs8_len > 0x7FFFFFFF)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: empty key", addr->text);
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, KEY_ADDR | OP_CONNECT);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_key_import(&op, pkcs8, pkcs8_len) : err);
}

static estc_err tpm2_key_public(estc_ctx *ctx, void *state, const estc_address *addr,
                                estc_buf *spki)
{
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, KEY_ADDR | OP_CONNECT);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_key_public(&op, spki) : err);
}

static estc_err tpm2_key_sign(estc_ctx *ctx, void *state, const estc_address *addr,
                              estc_sig_alg alg, estc_hash hash, const uint8_t *digest,
                              size_t digest_len, estc_buf *sig)
{
    size_t hlen = estc__hash_len(hash);
    if (hlen == 0 || estc__tpm2_hash_alg(hash) == TPM2_ALG_NULL)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown hash %d", addr->text, (int)hash);
    if (digest == NULL || digest_len != hlen || sig == NULL)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: digest length %zu, expected %zu",
                          addr->text, digest_len, hlen);
    if (alg != ESTC_SIG_ECDSA && alg != ESTC_SIG_RSA_PKCS1 && alg != ESTC_SIG_RSA_PSS)
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: unknown signature algorithm %d",
                          addr->text, (int)alg);
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, KEY_ADDR | OP_CONNECT);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_key_sign(&op, alg, hash, digest, digest_len, sig)
                                      : err);
}

static estc_err tpm2_key_remove(estc_ctx *ctx, void *state, const estc_address *addr)
{
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, KEY_ADDR);
    if (err != ESTC_OK)
        return err;
    /* A key file goes without the TPM. */
    if (op.a.type == ADDR_FILE)
        return estc__tpm2_keyfile_remove(&op);
    err = estc__tpm2_connect(&op, state);
    if (err == ESTC_OK)
        err = estc__tpm2_auth_begin(&op);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_key_remove(&op) : err);
}

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */
/* ------------------------------------------------------------------------ */

static estc_err tpm2_cert_store(estc_ctx *ctx, void *state, const estc_address *addr,
                                estc_obj_kind kind, const uint8_t *der, size_t der_len)
{
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: not a certificate kind", addr->text);
    if (der == NULL || der_len == 0)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: empty certificate", addr->text);
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, ADDR_NV | OP_CONNECT);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_cert_store(&op, der, der_len) : err);
}

static estc_err tpm2_cert_load(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *der)
{
    if (der == NULL)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: no output buffer", addr->text);
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, ADDR_NV | OP_CONNECT);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_cert_load(&op, der) : err);
}

static estc_err tpm2_cert_remove(estc_ctx *ctx, void *state, const estc_address *addr)
{
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, ADDR_NV | OP_CONNECT);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_cert_remove(&op) : err);
}

/* ------------------------------------------------------------------------ */
/* Listing, existence, derived addresses                                     */
/* ------------------------------------------------------------------------ */

static bool known_kind(estc_obj_kind kind)
{
    return kind == ESTC_OBJ_KEY || kind == ESTC_OBJ_CERT || kind == ESTC_OBJ_TRUST;
}

static estc_err tpm2_list(estc_ctx *ctx, void *state, const estc_address *prefix,
                          estc_obj_kind kind, estc_list_fn fn, void *arg)
{
    if (fn == NULL || !known_kind(kind))
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: bad list arguments", prefix->text);
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, prefix, ADDR_PREFIX | OP_CONNECT);
    return op_end(&op, err == ESTC_OK ? estc__tpm2_list(&op, kind, fn, arg) : err);
}

static estc_err tpm2_exists(estc_ctx *ctx, void *state, const estc_address *addr,
                            estc_obj_kind kind, bool *found)
{
    if (found == NULL)
        return ESTC_ERR_INVALID_ARG;
    *found = false;
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, addr, ADDR_KEY | ADDR_NV | ADDR_FILE);
    if (err != ESTC_OK)
        return err;
    /* A key address never holds a certificate and the reverse: the answer
     * needs no TPM. */
    if ((op.a.type != ADDR_NV) != (kind == ESTC_OBJ_KEY))
        return ESTC_OK;
    if (op.a.type == ADDR_FILE)
        return estc__tpm2_keyfile_exists(&op, found);
    err = estc__tpm2_connect(&op, state);
    return err == ESTC_OK ? estc__tpm2_exists(&op, found) : err;
}

static estc_err tpm2_address_derive(estc_ctx *ctx, void *state, const estc_address *prefix,
                                    estc_obj_kind kind, const char *name, char **addr)
{
    if (!known_kind(kind))
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: unknown object kind", prefix->text);
    if (name == NULL || addr == NULL)
        return ESTC_ERR_INVALID_ARG;
    struct tpm2_op op;
    estc_err err = op_begin(&op, ctx, state, prefix, ADDR_PREFIX);
    return err == ESTC_OK ? estc__tpm2_derive(&op, kind, name, addr) : err;
}

static void tpm2_cleanup(estc_ctx *ctx, void *state)
{
    (void)ctx;
    estc__tpm2_disconnect_all(state);
}

const struct estc_driver estc__driver_tpm2 = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "tpm2",
    .description = "TPM 2.0 (tpm2-tss ESAPI): persistent keys, TSS2 key files, certificates in "
                   "NV indices",
    .state_size = sizeof(struct tpm2_state),
    .caps = ESTC_CAP_ATTRIBUTES,
    .init = NULL,
    .cleanup = tpm2_cleanup,
    .key_generate = tpm2_key_generate,
    .key_import = tpm2_key_import,
    .key_public = tpm2_key_public,
    .key_sign = tpm2_key_sign,
    .key_remove = tpm2_key_remove,
    .cert_store = tpm2_cert_store,
    .cert_load = tpm2_cert_load,
    .cert_remove = tpm2_cert_remove,
    .list = tpm2_list,
    .exists = tpm2_exists,
    .address_derive = tpm2_address_derive,
};
