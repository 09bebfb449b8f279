/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The persisted state's encoding (persist_format.c), for persist.c.
 */
#ifndef ESTC_CORE_PERSIST_FORMAT_H
#define ESTC_CORE_PERSIST_FORMAT_H

#include "client_internal.h"

/* The largest body of a state, and of a whole state (header and digest). */
#define ESTC__STATE_BODY_MAX (16u * 1024 * 1024)
#define ESTC__STATE_FILE_MAX (ESTC__STATE_BODY_MAX + 16 + 32)

/* How the written state differs from the client's current one. */
enum estc__view_mode {
    ESTC__VIEW_NOW,    /* as it is */
    ESTC__VIEW_INTENT, /* with an object about to be created, as pending */
    ESTC__VIEW_COMMIT, /* as it will be after the commit under way */
};
struct estc__view {
    enum estc__view_mode mode;
    const char *intent_addr; /* ESTC__VIEW_INTENT: the object about to be created */
    estc_obj_kind intent_kind;
    const char *cert, *key;   /* the addresses to write */
    const estc_buf *cert_der; /* @cert's DER when in hand, else NULL: read it */
    char *const *ca_addrs;
    const estc__der_list *cas;
    size_t n_cas;
};

/* The view of the client as it is. */
void estc__view_now(estc_client *c, struct estc__view *v);
/* The whole state of @v, framed and digested, into @out. */
estc_err estc__state_encode(estc_client *c, const struct estc__view *v, estc_buf *out);

/* An address with bytes: a CA certificate, or a key the state carries. */
struct estc__state_pair {
    char *addr;
    estc_buf data;
};

/* A decoded state. */
struct estc__state {
    char *key_addr, *cert_addr, *key_base, *cert_base, *ca_prefix;
    estc_buf cert;
    struct estc__state_pair *cas;
    size_t n_cas;
    struct estc__state_pair *keys;
    size_t n_keys;
    bool have_explicit;
    int64_t provisioned, retry_at;
    bool have_hash;
    uint8_t hash[32];
    uint32_t failures;
    bool fallback, crts_due;
    int64_t last_error_at; /* 0: no T_LAST_ERROR record */
    int32_t last_error;
    char last_error_detail[ESTC__LAST_ERROR_MAX];
    estc_buf lifecycle; /* estc_lifecycle_serialize() text */
};

/* Checks the frame and the digest, then decodes every record into @st
 * (zeroed by the caller; free it with estc__state_free() either way).
 * ESTC_ERR_FORMAT for anything but a whole state of this version. */
estc_err estc__state_decode(const uint8_t *data, size_t len, struct estc__state *st);
void estc__state_free(struct estc__state *st);

/* Whether objects at @addr vanish with the process, so that the state must
 * carry them (the driver says so, not the scheme's name). */
bool estc__is_volatile(estc_client *c, const char *addr);
/* Whether the state may carry the private key at @addr. */
bool estc__key_exportable(estc_client *c, const char *addr);

#endif
