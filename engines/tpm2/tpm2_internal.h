/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tpm2: driver's private header, shared by its files:
 *
 *   tpm2.c     the driver table and its entry points, and the one prologue
 *              every operation starts with (op_begin)
 *   addr.c     the address attributes, handle ranges and derived addresses
 *   context.c  TCTI and ESYS connections, handle queries, ESYS_TR closing
 *              and flushing, the storage primary key
 *   keys.c     key generation, import, public keys, signatures, removal,
 *              for persistent keys and key files
 *   keyfile.c  the TSS2 PRIVATE KEY file codec (tpm2_keyfile.h)
 *   nv.c       certificates in NV indices, listing and existence
 */
#ifndef ESTC_TPM2_INTERNAL_H
#define ESTC_TPM2_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tss2/tss2_esys.h>

#include <estc/engine.h>

#define PERSISTENT_OWNER_FIRST 0x81000000u
#define PERSISTENT_OWNER_LAST 0x817FFFFFu
#define NV_FIRST 0x01000000u
#define NV_LAST 0x01FFFFFFu

#define DEFAULT_SRK 0x81000001u
#define KEY_CACHE 8
/* Default ranges for derived addresses (see docs/engines/tpm2.md). */
#define DEFAULT_KEY_LO 0x81020000u
#define DEFAULT_KEY_HI 0x8102FFFFu
#define DEFAULT_NV_LO 0x01800000u
#define DEFAULT_NV_HI 0x0181FFFFu

/* One TPM connection: one TCTI and its ESYS context, kept for the context's
 * lifetime and shared by every address naming the same TCTI. */
struct tpm2_conn {
    char *tcti; /* configuration string; "" for the tctildr default */
    TSS2_TCTI_CONTEXT *tcti_ctx;
    ESYS_CONTEXT *esys;
    uint32_t nv_buffer_max; /* 0 until asked */
    uint32_t nv_index_max;
    /* Open handles kept across operations to save TPM round trips. A cached
     * key keeps its public area too, so that a signature is one TPM command;
     * when a command with it fails, keys.c reads the public area again and
     * retries once if the key at the handle changed (evicted or replaced by
     * another program). Reading the public key always asks the TPM. */
    uint32_t srk_handle;
    ESYS_TR srk_tr;
    struct tpm2_key {
        uint32_t handle;
        ESYS_TR tr;
        TPM2B_PUBLIC pub;
    } keys[KEY_CACHE];
    size_t n_keys;
    unsigned tested_types; /* bit per estc_key_type that TestParms accepted */
};

/* The driver's state in each library context. */
struct tpm2_state {
    struct tpm2_conn *conns;
    size_t n_conns;
};

/* What an address names; flags, so that an operation can accept several. */
enum addr_type {
    ADDR_PREFIX = 1u << 0, /* neither handle= nor nv= */
    ADDR_KEY = 1u << 1,    /* handle= */
    ADDR_NV = 1u << 2,     /* nv= */
    ADDR_FILE = 1u << 3,   /* key-file=: a TSS2 PRIVATE KEY file */
};

/* The meaning of an address's attributes. No allocation: @tcti points into
 * the parsed address, which outlives the operation. */
struct tpm2_addr {
    enum addr_type type;
    uint32_t handle;             /* key handle or NV index */
    const char *tcti;            /* from ?tcti=, NULL when absent */
    uint32_t srk;                /* storage primary handle */
    uint32_t key_lo, key_hi;     /* prefixes: key handle range */
    uint32_t nv_lo, nv_hi;       /* prefixes: NV range, certs low half, trust high half */
    const char *key_file;        /* key-file=: the path (percent-decoded) */
    const char *key_dir;         /* prefixes: key-dir=, derived keys are files there */
    const char *owner_auth_src;  /* owner-auth-source=: file holding the owner password */
    const char *parent_auth_src; /* parent-auth-source=: file holding the parent's password */
};

/* One operation: what op_begin() in tpm2.c sets up for every entry point. */
struct tpm2_op {
    estc_ctx *ctx;
    const estc_address *addr;
    const char *text; /* addr->text, for messages (estc_error() hides secrets) */
    struct tpm2_addr a;
    struct tpm2_conn *c; /* the TPM connection; NULL when not connected */
    /* Passwords read for this operation only (estc__tpm2_auth_begin), wiped
     * by estc__tpm2_auth_end(); never logged. */
    TPM2B_AUTH owner_auth;
    TPM2B_AUTH parent_auth;
};

/* addr.c ----------------------------------------------------------------- */

/* Reads the attributes of @addr into @a, checking their names, places and
 * values. ESTC_ERR_BAD_ADDRESS with the reason in the detail text. */
estc_err estc__tpm2_addr_read(estc_ctx *ctx, const estc_address *addr, struct tpm2_addr *a);

/* The handle range of @kind under the prefix whose attributes are @a. */
void estc__tpm2_kind_range(const struct tpm2_addr *a, estc_obj_kind kind, uint32_t *lo,
                           uint32_t *hi);

/* The address of the object of @kind at handle or index @h under the prefix
 * of @op, as a new string in *@out. */
estc_err estc__tpm2_compose(const struct tpm2_op *op, estc_obj_kind kind, uint32_t h, char **out);

/* "tpm2:key-file=DIR/FILE" with the prefix's query, DIR and FILE
 * percent-encoded, as a new string in *@out. */
estc_err estc__tpm2_compose_file(const struct tpm2_op *op, const char *dir, const char *file,
                                 char **out);

/* address_derive on the prefix of @op: a key under a key-dir= prefix is the
 * file KEY-DIR/NAME.pem, anything else a handle or index in its range. */
estc_err estc__tpm2_derive(const struct tpm2_op *op, estc_obj_kind kind, const char *name,
                           char **out);

/* context.c -------------------------------------------------------------- */

/* Reports a TSS return code of @call, mapped to the closest estc_err. */
estc_err estc__tpm2_tss_err(const struct tpm2_op *op, const char *call, TSS2_RC rc);

/* Sets @op->c to the connection of the address's TCTI, opened when new. */
estc_err estc__tpm2_connect(struct tpm2_op *op, struct tpm2_state *st);

/* Closes every connection of @st. */
void estc__tpm2_disconnect_all(struct tpm2_state *st);

/* The value of TPM property @pt. */
estc_err estc__tpm2_property(const struct tpm2_op *op, TPM2_PT pt, uint32_t *value);

/* Walks the handles in [lo, hi] that the TPM holds, in ascending order;
 * @fn returns false to stop. */
estc_err estc__tpm2_handles_walk(const struct tpm2_op *op, uint32_t lo, uint32_t hi,
                                 bool (*fn)(void *arg, uint32_t h), void *arg);

/* Whether the TPM holds persistent object or NV index @h. */
estc_err estc__tpm2_handle_present(const struct tpm2_op *op, uint32_t h, bool *present);

/* Fails with ESTC_ERR_EXISTS when the handle of @op is taken. */
estc_err estc__tpm2_check_free(const struct tpm2_op *op);

/* An ESYS_TR for the persistent object or NV index @h; ESTC_ERR_NOT_FOUND
 * when the TPM does not hold it. Close it with estc__tpm2_tr_close(). */
estc_err estc__tpm2_tr_from(const struct tpm2_op *op, uint32_t h, ESYS_TR *tr);

/* Closes (without flushing) or flushes @tr, leaving ESYS_TR_NONE. */
void estc__tpm2_tr_close(struct tpm2_conn *c, ESYS_TR *tr);
void estc__tpm2_flush(struct tpm2_conn *c, ESYS_TR *tr);

/* The connection's cache of open key handles: the entry of @handle or NULL;
 * dropping it (closing its ESYS_TR); adding one for @tr (owned by the cache
 * from then on) with public area @pub, the oldest entry dropped when full. */
struct tpm2_key *estc__tpm2_key_find(struct tpm2_conn *c, uint32_t handle);
void estc__tpm2_key_forget(struct tpm2_conn *c, uint32_t handle);
struct tpm2_key *estc__tpm2_key_remember(struct tpm2_conn *c, uint32_t handle, ESYS_TR tr,
                                         const TPM2B_PUBLIC *pub);

/* The storage primary key at the address's SRK handle, created and made
 * persistent when absent; owned by the connection. */
estc_err estc__tpm2_srk_get(const struct tpm2_op *op, ESYS_TR *srk);

/* Sets the parent password of the operation on @parent (the SRK or a key
 * file's persistent parent). */
estc_err estc__tpm2_set_parent_auth(const struct tpm2_op *op, ESYS_TR parent);

/* Reads the operation's passwords (owner-auth-source= or
 * ESTC_TPM2_OWNER_AUTH_FILE, parent-auth-source=) and sets the owner
 * hierarchy's on the connection; ESTC_ERR_AUTH when a file cannot be read,
 * is open to others or too long. */
estc_err estc__tpm2_auth_begin(struct tpm2_op *op);

/* Resets the connection's owner and SRK passwords to empty and wipes the
 * operation's copies. */
void estc__tpm2_auth_end(struct tpm2_op *op);

/* Drops the cached SRK after a failure that may come from its eviction. */
void estc__tpm2_srk_check(struct tpm2_conn *c, estc_err err);

/* keys.c ----------------------------------------------------------------- */

estc_err estc__tpm2_key_generate(const struct tpm2_op *op, estc_key_type type);
estc_err estc__tpm2_key_import(const struct tpm2_op *op, const uint8_t *pkcs8, size_t pkcs8_len);
estc_err estc__tpm2_key_public(const struct tpm2_op *op, estc_buf *spki);
estc_err estc__tpm2_key_sign(const struct tpm2_op *op, estc_sig_alg alg, estc_hash hash,
                             const uint8_t *digest, size_t digest_len, estc_buf *sig);
estc_err estc__tpm2_key_remove(const struct tpm2_op *op);

/* Key files (key-file=): removal and existence need no TPM; listing the
 * key files of a key-dir= prefix. */
estc_err estc__tpm2_keyfile_remove(const struct tpm2_op *op);
estc_err estc__tpm2_keyfile_exists(const struct tpm2_op *op, bool *found);
estc_err estc__tpm2_keyfile_list(const struct tpm2_op *op, estc_list_fn fn, void *arg);

/* Whether the driver knows @type (key generation checks it before the
 * address: an unknown type is refused whatever the address). */
bool estc__tpm2_key_type_known(estc_key_type type);

/* The TPM hash algorithm of @hash, TPM2_ALG_NULL for an unknown one. */
TPM2_ALG_ID estc__tpm2_hash_alg(estc_hash hash);

/* nv.c ------------------------------------------------------------------- */

estc_err estc__tpm2_cert_store(const struct tpm2_op *op, const uint8_t *der, size_t der_len);
estc_err estc__tpm2_cert_load(const struct tpm2_op *op, estc_buf *der);
estc_err estc__tpm2_cert_remove(const struct tpm2_op *op);
estc_err estc__tpm2_list(const struct tpm2_op *op, estc_obj_kind kind, estc_list_fn fn, void *arg);
estc_err estc__tpm2_exists(const struct tpm2_op *op, bool *found);

#endif
