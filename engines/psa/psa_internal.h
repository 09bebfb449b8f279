/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The "psa" driver's private declarations, shared by its files:
 *   addr.c    what an address names (attribute rules, numbers, ranges), the
 *             prologue of every operation, and the addresses it composes
 *   status.c  PSA status codes as estc errors, psa_crypto_init()
 *   keys.c    persistent keys
 *   its.c     certificates in Internal Trusted Storage
 *   psa.c     list, exists, address_derive and the driver table
 */
#ifndef ESTC_PSA_INTERNAL_H
#define ESTC_PSA_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <psa/crypto.h>

#include "psa_its.h"
#include "util.h"

/* Default ranges of a prefix without range attributes (disjoint). */
#define PSA_DEFAULT_KEY_LO 0x10000u
#define PSA_DEFAULT_KEY_HI 0x1ffffu
#define PSA_DEFAULT_CERT_LO 0x20000u
#define PSA_DEFAULT_CERT_HI 0x2ffffu
#define PSA_DEFAULT_TRUST_LO 0x30000u
#define PSA_DEFAULT_TRUST_HI 0x3ffffu

/* list() probes every id of a range; this bounds its cost (about 3 s). */
#define PSA_RANGE_MAX_SPAN 0x100000u

/* uids mbed TLS keeps for itself (transaction file, entropy seed). */
#define PSA_RESERVED_UID_LO 0xffffff00u
#define PSA_RESERVED_UID_HI 0xffffffffu

/* Largest ITS entry read back as a certificate. */
#define PSA_CERT_MAX_LEN 65536u

/* Room for any address the driver composes ("psa:uid=0x" and 16 digits). */
#define PSA_ADDR_BUF 64

struct psa_state {
    bool ready; /* psa_crypto_init() succeeded */
};

struct psa_range {
    uint64_t lo, hi;
};

/* The forms of address an operation accepts. */
enum psa_form {
    PSA_FORM_KEY = 1u << 0,    /* key-id=: a persistent key */
    PSA_FORM_CERT = 1u << 1,   /* uid=: an ITS entry holding a certificate */
    PSA_FORM_PREFIX = 1u << 2, /* key-id-range=, cert-uid-range=, trust-uid-range= */
};

/* What an address names, as psa__begin() reads it. */
struct psa_target {
    const char *addr;                    /* the address text, for messages (estc_error() redacts) */
    unsigned form;                       /* the one enum psa_form the address has */
    mbedtls_svc_key_id_t key_id;         /* PSA_FORM_KEY */
    psa_storage_uid_t uid;               /* PSA_FORM_CERT */
    struct psa_range keys, certs, trust; /* PSA_FORM_PREFIX, defaults filled in */
};

/*
 * The prologue of every operation: reads @addr, which must have one of the
 * @forms (each form's attributes and no other; values checked, a prefix's
 * ranges checked to be apart), into @t, then brings PSA up in @st. A NULL
 * @st reads the address only (address_derive, which touches no storage).
 * Failures are recorded with estc_error() and returned.
 */
estc_err psa__begin(estc_ctx *ctx, struct psa_state *st, const estc_address *addr, unsigned forms,
                    struct psa_target *t);

/* The range of @t (a prefix) where objects of @kind live. */
const struct psa_range *psa__range_of(const struct psa_target *t, estc_obj_kind kind);

/* The address of the key (ESTC_OBJ_KEY) or ITS entry (the other kinds) with
 * id @id, into @buf (PSA_ADDR_BUF bytes): "psa:key-id=0x.." or "psa:uid=0x..". */
void psa__compose(estc_obj_kind kind, uint64_t id, char buf[PSA_ADDR_BUF]);

/* The id in @r for the object called @name: picked by the name's SHA-256, so
 * the same name always lands on the same id. */
estc_err psa__pick_id(const struct psa_range *r, const char *name, uint64_t *id);

/* The storage uid of a key (mbed TLS files a key under its key id). */
uint64_t psa__key_uid(mbedtls_svc_key_id_t id);

/* psa_crypto_init() once per context, with the folder check. */
estc_err psa__init(estc_ctx *ctx, struct psa_state *st, const char *addr);

/* Records a failed PSA call: the detail names the address, call and status. */
estc_err psa__fail(estc_ctx *ctx, const char *addr, const char *call, psa_status_t st);

/* Reads the certificate entry at @uid into @der. ESTC_ERR_NOT_FOUND when
 * absent, ESTC_ERR_FORMAT when the entry is not a DER certificate. A NULL
 * @ctx records nothing. */
estc_err psa__read_cert(estc_ctx *ctx, const char *addr, psa_storage_uid_t uid, estc_buf *der);

/* psa_get_key_attributes() of the key at @id, for its status only. */
psa_status_t psa__key_probe(mbedtls_svc_key_id_t id);

/* The operations of keys.c and its.c (see struct estc_driver). */
estc_err psa__key_generate(estc_ctx *ctx, void *state, const estc_address *addr,
                           estc_key_type type);
estc_err psa__key_import(estc_ctx *ctx, void *state, const estc_address *addr, const uint8_t *pkcs8,
                         size_t pkcs8_len);
estc_err psa__key_public(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *spki);
estc_err psa__key_sign(estc_ctx *ctx, void *state, const estc_address *addr, estc_sig_alg alg,
                       estc_hash hash, const uint8_t *digest, size_t digest_len, estc_buf *sig);
estc_err psa__key_remove(estc_ctx *ctx, void *state, const estc_address *addr);
estc_err psa__cert_store(estc_ctx *ctx, void *state, const estc_address *addr, estc_obj_kind kind,
                         const uint8_t *der, size_t der_len);
estc_err psa__cert_load(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *der);
estc_err psa__cert_remove(estc_ctx *ctx, void *state, const estc_address *addr);

#endif
