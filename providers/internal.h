/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OpenSSL 3 provider's private parts: the provider context, the key
 * object shared by KEYMGMT, SIGNATURE, STORE and DECODER, and helpers.
 */
#ifndef ESTC_PROVIDERS_INTERNAL_H
#define ESTC_PROVIDERS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>

#include <estc/engine.h>

#define ESTC__PROV_NAME "estc"
/* Reported as the provider's version; follows the project version. */
#define ESTC__PROV_VERSION "0.1.0"
/* Software work (hashing, parsing, verifying) goes to any other provider. */
#define ESTC__SW_PROPQ "provider!=estc"
/* The structure name our PEM decoder gives the reference's body. */
#define ESTC__REF_STRUCTURE "estc-keyref"
#define ESTC__REF_PEM_LABEL "ESTC KEY REFERENCE"

/* Reason codes of the errors we put on OpenSSL's error queue. */
enum {
    ESTC__R_ENGINE = 1,     /* an engine operation failed */
    ESTC__R_EXPORT_REFUSED, /* private key material never leaves the engine */
    ESTC__R_UNSUPPORTED,    /* algorithm, digest, padding or parameter */
    ESTC__R_BAD_REFERENCE,  /* a key reference or address is malformed */
    ESTC__R_NOMEM,
    ESTC__R_WRONG_KEY_TYPE, /* key type differs from the expected one */
    ESTC__R_INTERNAL,
    ESTC__R_NO_DEFAULT, /* the application did not load OpenSSL's default provider */
};

struct estc__prov {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *libctx; /* child of the application's: for software work */
    estc_ctx *ectx;
    bool own_ectx;          /* module: we created it and free it */
    pthread_mutex_t lock;   /* an estc_ctx is used by one thread at a time */
    OSSL_ALGORITHM *stores; /* one per engine scheme, except those of file engines */
    size_t n_stores;
    /* estc__prov_need_default() found SHA-256 once: not asked again. */
    atomic_bool have_default;

    OSSL_FUNC_core_new_error_fn *core_new_error;
    OSSL_FUNC_core_set_error_debug_fn *core_set_error_debug;
    OSSL_FUNC_core_vset_error_fn *core_vset_error;
};

typedef enum estc__kt {
    ESTC__KT_EC = 1,
    ESTC__KT_RSA,
} estc__kt;

/*
 * A key as KEYMGMT keydata. @addr is NULL for a key imported from public
 * parameters (a peer's certificate key in EVP_PKEY_eq()); @pub is then the
 * whole key. @pub is always a software (non-estc) key holding the public
 * part or, for parameters-only EC data, the group.
 */
struct estc__key {
    struct estc__prov *prov;
    estc__kt type;
    char *addr;
    EVP_PKEY *pub;
    bool has_pub;
};

/*
 * What our STORE and DECODER pass as OSSL_OBJECT_PARAM_REFERENCE: a key
 * object that KEYMGMT load() copies. It lives only during the callback.
 */
#define ESTC__KEYREF_MAGIC 0x65737463u /* "estc" */
struct estc__keyref {
    uint32_t magic;
    struct estc__key *key;
};

/* Puts an error on OpenSSL's queue, naming the caller's position; the text
 * goes through estc_redact() first. */
void estc__prov_raise(struct estc__prov *prov, int reason, const char *file, int line,
                      const char *func, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
#define ESTC__RAISE(prov, reason, ...)                                                             \
    estc__prov_raise((prov), (reason), __FILE__, __LINE__, __func__, __VA_ARGS__)

/*
 * Whether the software algorithms the engines and the provider rely on
 * (SHA-256 here, as a token's own library may hash with it in this process)
 * can be fetched from the application's providers. Without OpenSSL's
 * default provider they cannot, and a token then fails in a misleading way
 * (SoftHSM2 reports a wrong PIN): an error that says to load it is raised
 * and false returned. Once found it is not fetched again for @prov.
 */
bool estc__prov_need_default(struct estc__prov *prov);

/* Raises the estc_ctx's detail of @err as an ESTC__R_ENGINE error. */
void estc__prov_raise_engine(struct estc__prov *prov, estc_err err, const char *what);

/*
 * A new key object for the engine key at @addr (@len bytes, no NUL needed):
 * reads the public key from the engine. With @want 0 any type is accepted.
 * NULL on failure, with an error raised.
 */
struct estc__key *estc__key_from_engine(struct estc__prov *prov, const char *addr, size_t len,
                                        estc__kt want);
void estc__key_free(struct estc__key *key);

/* Whether @addr (@len bytes) is acceptable as an engine address. */
bool estc__valid_address(const char *addr, size_t len);

/* Dispatch tables. */
extern const OSSL_DISPATCH estc__ec_keymgmt_functions[];
extern const OSSL_DISPATCH estc__rsa_keymgmt_functions[];
extern const OSSL_DISPATCH estc__ecdsa_signature_functions[];
extern const OSSL_DISPATCH estc__rsa_signature_functions[];
extern const OSSL_DISPATCH estc__store_functions[];
extern const OSSL_DISPATCH estc__pem_decoder_functions[];
extern const OSSL_DISPATCH estc__ec_decoder_functions[];
extern const OSSL_DISPATCH estc__rsa_decoder_functions[];

/*
 * The provider's init, shared by the built-in and the module entry points.
 * Takes @ectx (freed on failure when @own_ectx).
 */
int estc__provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                        const OSSL_DISPATCH **out, void **provctx, estc_ctx *ectx, bool own_ectx);

#endif
