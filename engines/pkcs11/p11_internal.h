/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The PKCS#11 driver's private interface, shared by its files:
 *
 *   module.c   modules, fork handling, tokens, sessions, login and PIN
 *   uri.c      what an address says (its attributes) and derived addresses
 *   objects.c  finding objects, reading attributes, the handle cache, removal
 *   keys.c     key generation, import and removal
 *   sign.c     public keys and signing
 *   certs.c    certificates, exists and list
 *   pkcs11.c   the operation prologue and the driver's entry points
 */
#ifndef ESTC_ENGINES_PKCS11_INTERNAL_H
#define ESTC_ENGINES_PKCS11_INTERNAL_H

#include <estc/engine.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PIN_MAX 256
#define LIST_MAX_OBJECTS 4096
/* CKA_CERTIFICATE_CATEGORY values (PKCS#11 2.20). */
#define CERT_CATEGORY_USER 1
#define CERT_CATEGORY_AUTHORITY 2

struct p11_module {
    struct p11_module *next;
    char *path; /* a module loaded by path (released on its own), or NULL */
    char *name; /* a module of p11-kit's registered list, by name, or NULL */
    /* x-init-reserved= of the address that loaded it by path, or NULL: such a
     * module is loaded unmanaged and initialized with this as pReserved. */
    char *init_reserved;
    bool ours; /* with init_reserved: our C_Initialize did it (we finalize it) */
    CK_FUNCTION_LIST *fn;
    pid_t init_pid; /* process that initialized it, 0 when not initialized */
    bool broken;    /* a registered module that failed to initialize */
    CK_INFO info;
    bool have_info;
};

/* A found object's handle, kept to spare the next call a C_FindObjects
 * (which costs a directory scan on file-backed tokens). An entry is made
 * only for a handle checked to name the object (class, label and id); a
 * private key's entry also keeps its key type, so that a signature is
 * C_SignInit + C_Sign and nothing else (estc__p11_find_key()). */
#define HCACHE_SIZE 16
#define HCACHE_LABEL_MAX 128
#define HCACHE_ID_MAX 64
struct hcache_entry {
    bool used, has_label, has_id;
    CK_OBJECT_CLASS cls;
    CK_ULONG label_len, id_len;
    uint8_t label[HCACHE_LABEL_MAX];
    uint8_t id[HCACHE_ID_MAX];
    CK_OBJECT_HANDLE h;
    bool has_kt;
    CK_KEY_TYPE kt; /* with has_kt: CKA_KEY_TYPE, read when the entry was made */
};

struct p11_token {
    struct p11_token *next;
    struct p11_module *mod;
    CK_SLOT_ID slot;
    CK_SLOT_INFO slot_info;
    CK_TOKEN_INFO info;
    /* The token's pooled session: opened on first use and kept for every
     * operation of the context on this token (a context is used by one
     * thread at a time, so one is enough); dropped with the handle cache
     * on fork, on a session or token error and when the slot holds another
     * token (another serial number). */
    CK_SESSION_HANDLE session;
    bool has_session;
    bool stale;       /* gone or re-initialized: look it up again */
    bool login_known; /* logged_in is what the token said since the session opened */
    bool logged_in;   /* with login_known: the user is logged in */
    struct hcache_entry hc[HCACHE_SIZE];
    unsigned hc_next;
};

struct p11_state {
    pid_t pid;
    struct p11_module *modules;
    struct p11_token *tokens;
    CK_FUNCTION_LIST **registered; /* p11-kit's registered modules, loaded on demand */
    bool registered_loaded;
};

/* What an address says, read from its parsed attributes (uri.c). */
struct p11_uri {
    P11KitUri *match;    /* token, slot and module attributes, for p11-kit's matcher */
    CK_SLOT_ID slot_id;  /* slot-id=, or (CK_SLOT_ID)-1 for any slot */
    CK_ATTRIBUTE *label; /* object=: CKA_LABEL, or NULL */
    CK_ATTRIBUTE *id;    /* id=: CKA_ID, or NULL */
    CK_ATTRIBUTE *cls;   /* type=: CKA_CLASS, or NULL */
    const estc_attr *pin_value, *pin_source, *module_path, *module_name; /* or NULL */
    const estc_attr *init_reserved; /* x-init-reserved=: C_Initialize's pReserved, or NULL */
    CK_ATTRIBUTE label_attr, id_attr, cls_attr; /* what label, id and cls point at */
    CK_OBJECT_CLASS cls_value;
};

/* What an operation needs before it starts (p11_begin()). */
enum p11_need {
    P11_OBJECT = 1u << 0,       /* object= or id= */
    P11_LABEL = 1u << 1,        /* object= (a new object) */
    P11_TYPE_KEY = 1u << 2,     /* type=, when given, is private or public */
    P11_TYPE_PRIVATE = 1u << 3, /* type=, when given, is private */
    P11_TYPE_CERT = 1u << 4,    /* type=, when given, is cert */
    P11_TOKEN = 1u << 5,        /* the token found, its session open, logged in with the PIN */
    P11_USER = 1u << 6,         /* with the token: the user is logged in (private objects) */
};

/* One operation on one address. */
struct p11_op {
    estc_ctx *ctx;
    struct p11_state *st;
    const estc_address *addr;
    const char *shown; /* the address with its PIN hidden, for messages */
    unsigned needs;    /* enum p11_need */
    bool retried;
    struct p11_uri uri;
    struct p11_token *tok;
    CK_FUNCTION_LIST *fn;
    CK_SESSION_HANDLE s;
    char pin[PIN_MAX + 1];
    size_t pin_len;
    bool have_pin;
    bool logged_in; /* the token is logged in for this process */
    CK_RV rv;       /* the last PKCS#11 failure */
};

/* module.c */
/* Record a failed PKCS#11 call in the detail text; the estc error for @rv. */
estc_err estc__p11_fail(struct p11_op *op, const char *call, CK_RV rv);
estc_err estc__p11_nomem(struct p11_op *op);
void estc__p11_check_fork(estc_ctx *ctx, struct p11_state *st);
/* Read the PIN, find the token, open its session, log in; with P11_USER the
 * user must be logged in. */
estc_err estc__p11_session(struct p11_op *op);
/* Initialize op->tok's module again and make the token ready (session,
 * login): for a module that gave one handle to two objects. */
estc_err estc__p11_reinit(struct p11_op *op);
/* Repair the session state after a failure it explains; whether to retry. */
bool estc__p11_recover(struct p11_op *op, estc_err err);
void estc__p11_state_free(struct p11_state *st);

/* uri.c */
/* Read op->addr's attributes into op->uri (BAD_ADDRESS for unknown ones). */
estc_err estc__p11_uri_load(struct p11_op *op);
void estc__p11_uri_clear(struct p11_uri *uri);
/* The P11_OBJECT, P11_LABEL and P11_TYPE_* checks of @needs. */
estc_err estc__p11_uri_check(struct p11_op *op, unsigned needs);
estc_err estc__p11_uri_id(struct p11_op *op, uint8_t id[64], CK_ULONG *id_len, bool *given);
/* address_derive: the address of object @name under the prefix op->addr. */
estc_err estc__p11_derive(struct p11_op *op, const char *name, char **out);
/* The address of the object labelled @label under @prefix, composed from
 * the prefix's attributes. NOMEM, or BAD_ADDRESS when too long. */
estc_err estc__p11_uri_derive(const estc_address *prefix, const void *label, size_t label_len,
                              char **out);

/* objects.c */
estc_err estc__p11_find_objects(struct p11_op *op, CK_OBJECT_CLASS cls, bool use_uri,
                                CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *n);
estc_err estc__p11_find_one(struct p11_op *op, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *h,
                            bool *found);
estc_err estc__p11_get_attr(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                            estc_buf *out);
/* Whether handle @h names an object of @cls with @label and @id (each when
 * not NULL). */
bool estc__p11_handle_is(struct p11_op *op, CK_OBJECT_HANDLE h, CK_OBJECT_CLASS cls,
                         const CK_ATTRIBUTE *label, const CK_ATTRIBUTE *id);
/* Find the objects of @cls the address names, each handle checked to name
 * such an object; when one does not, the module is initialized again and
 * the search repeated once (estc__p11_reinit()). */
estc_err estc__p11_find_checked(struct p11_op *op, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *out,
                                CK_ULONG max, CK_ULONG *n);
/* Check that the handle a creation returned names the new object of @cls
 * (the address's label and id); else find it (after estc__p11_reinit()). */
estc_err estc__p11_created(struct p11_op *op, CK_OBJECT_CLASS cls, CK_OBJECT_HANDLE *h);
bool estc__p11_get_ulong(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                         CK_ULONG *v);
bool estc__p11_get_bool(struct p11_op *op, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type, bool *v);
bool estc__p11_cert_is_trust(struct p11_op *op, CK_OBJECT_HANDLE h);
/* The private key the address names and its key type, from the handle
 * cache without a call to the token when it is there (*@cached true), else
 * found, checked and put in the cache. A cached handle is trusted until the
 * token refuses it: the caller then calls estc__p11_forget() and asks again
 * with @use_cache false. */
estc_err estc__p11_find_key(struct p11_op *op, bool use_cache, CK_OBJECT_HANDLE *h, CK_KEY_TYPE *kt,
                            bool *found, bool *cached);
/* Drop handle @h from the cache (removed, or refused by the token). */
void estc__p11_forget(struct p11_op *op, CK_OBJECT_HANDLE h);
/* Put a just created private key in the cache (label and id of the address). */
void estc__p11_remember_key(struct p11_op *op, CK_OBJECT_HANDLE h, CK_KEY_TYPE kt);
estc_err estc__p11_not_found(struct p11_op *op, const char *what);
void estc__p11_destroy_quiet(struct p11_op *op, CK_OBJECT_HANDLE h);
estc_err estc__p11_destroy_all(struct p11_op *op, CK_OBJECT_CLASS cls, CK_ULONG *n);

/* keys.c (and sign.c, certs.c): the operations, run after the prologue */
const uint8_t *estc__p11_ec_oid(estc_key_type type, size_t *len);
estc_err estc__p11_key_generate(struct p11_op *op, estc_key_type type);
estc_err estc__p11_key_import(struct p11_op *op, const uint8_t *pkcs8, size_t len);
estc_err estc__p11_key_remove(struct p11_op *op);

/* sign.c */
estc_err estc__p11_key_public(struct p11_op *op, estc_buf *spki);
estc_err estc__p11_key_sign(struct p11_op *op, estc_sig_alg alg, estc_hash hash,
                            const uint8_t *digest, size_t digest_len, estc_buf *sig);

/* certs.c */
estc_err estc__p11_cert_store(struct p11_op *op, estc_obj_kind kind, const uint8_t *der,
                              size_t der_len);
estc_err estc__p11_cert_load(struct p11_op *op, estc_buf *der);
estc_err estc__p11_cert_remove(struct p11_op *op);
estc_err estc__p11_exists(struct p11_op *op, estc_obj_kind kind, bool *found);
estc_err estc__p11_list(struct p11_op *op, estc_obj_kind kind, estc_list_fn fn, void *arg);

#endif
