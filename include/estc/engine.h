/* SPDX-License-Identifier: Apache-2.0 */
/*
 * estc — crypto engines: the library context, the driver API, addresses,
 * address generators and the lifecycle tracker.
 *
 * Every operation on a private key, a certificate or the trust store goes
 * through an engine driver chosen by the scheme of its address
 * ("mem:est-key", "file:/var/lib/estc/key.pem", "pkcs11:token=T;object=K").
 * A driver is one `const struct estc_driver` of operations; writing one needs
 * this header alone (see docs/writing-a-driver.md).
 *
 * Threads: an estc_ctx and everything made from it is used by one thread at a
 * time. Different contexts may be used from different threads.
 */
#ifndef ESTC_ENGINE_H
#define ESTC_ENGINE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <estc/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The longest address accepted, in bytes, without the terminating NUL. */
#define ESTC_ADDRESS_MAX 1024
/* The longest scheme accepted ("pkcs11"), in bytes. */
#define ESTC_SCHEME_MAX 31

/* ------------------------------------------------------------------------ */
/* Buffers                                                                   */
/* ------------------------------------------------------------------------ */

/* Bytes owned by the holder: allocated with malloc(), released with
 * estc_buf_free(). Drivers fill buffers with malloc()ed memory. */
typedef struct estc_buf {
    uint8_t *data;
    size_t len;
} estc_buf;

/**
 * estc_buf_free() - wipe and free a buffer's bytes, leaving it empty.
 *
 * Accepts NULL and empty buffers.
 */
void estc_buf_free(estc_buf *buf);

/**
 * estc_buf_set() - replace a buffer's bytes with a copy of @data.
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL @buf, or NULL @data with a
 * non-zero @len) or ESTC_ERR_NOMEM (the buffer is then unchanged).
 */
estc_err estc_buf_set(estc_buf *buf, const void *data, size_t len);

/* ------------------------------------------------------------------------ */
/* Context, errors and logging                                               */
/* ------------------------------------------------------------------------ */

typedef struct estc_ctx estc_ctx;

typedef enum estc_log_level {
    ESTC_LOG_ERROR = 0,
    ESTC_LOG_WARNING,
    ESTC_LOG_INFO,
    ESTC_LOG_DEBUG,
} estc_log_level;

/* Receives one log line (no trailing newline). Secrets are never passed. */
typedef void (*estc_log_fn)(void *arg, estc_log_level level, const char *msg);

/**
 * estc_ctx_new() - create a library context with the built-in drivers.
 * @out: receives the context; unchanged on failure.
 *
 * The built-in drivers are "mem" and "file", and "pkcs11", "tpm2" and "psa"
 * when the library was built with them.
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL @out) or ESTC_ERR_NOMEM.
 */
estc_err estc_ctx_new(estc_ctx **out);

/**
 * estc_ctx_free() - release a context, its drivers' state and loaded modules.
 *
 * Engine objects are not removed; use estc_lifecycle_cleanup() for that.
 * Accepts NULL.
 */
void estc_ctx_free(estc_ctx *ctx);

/**
 * estc_ctx_set_log() - route log lines of @level and more severe to @fn.
 *
 * With @fn NULL the library is silent (the default).
 * Returns ESTC_OK or ESTC_ERR_INVALID_ARG (NULL @ctx, bad @level).
 */
estc_err estc_ctx_set_log(estc_ctx *ctx, estc_log_level level, estc_log_fn fn, void *arg);

/**
 * estc_ctx_error_detail() - the detail text of the last failure on @ctx.
 *
 * For example "pkcs11:token=T;object=K: C_Sign: CKR_KEY_HANDLE_INVALID".
 * The text is kept until the next failure replaces it or
 * estc_ctx_clear_error() empties it; read it right after a call failed.
 * Never returns NULL (a NULL @ctx gives "").
 */
const char *estc_ctx_error_detail(const estc_ctx *ctx);

/** estc_ctx_clear_error() - empty the detail text. Accepts NULL. */
void estc_ctx_clear_error(estc_ctx *ctx);

/**
 * estc_error() - record the detail of a failure and return @err.
 *
 * For drivers and the library: `return estc_error(ctx, ESTC_ERR_ENGINE,
 * "%s: C_Sign: %s", addr, ckr_name);`. The text is also logged at error
 * level. Never put PINs or key bytes in it. A NULL @ctx only returns @err.
 */
estc_err estc_error(estc_ctx *ctx, estc_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** estc_log() - log one line through the context's log callback. */
void estc_log(estc_ctx *ctx, estc_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * estc_address_scheme() - copy the scheme of @addr ("pkcs11") into @scheme.
 * @scheme: at least ESTC_SCHEME_MAX + 1 bytes.
 *
 * A scheme is a letter followed by letters, digits, '+', '-' or '.', ended by
 * ':', lower-cased on output. Returns ESTC_OK, ESTC_ERR_INVALID_ARG (NULL
 * argument) or ESTC_ERR_BAD_ADDRESS (empty, over-long, no scheme, a control
 * character anywhere in @addr).
 */
estc_err estc_address_scheme(const char *addr, char scheme[ESTC_SCHEME_MAX + 1]);

/* One "name=value" attribute of an address; @value is percent-decoded and
 * NUL-terminated, @value_len counts its bytes (a value may hold a NUL). */
typedef struct estc_attr {
    const char *name;
    const char *value;
    size_t value_len;
} estc_attr;

/*
 * A parsed address, as every driver operation receives it. The framework
 * parses each address once: drivers never cut address strings apart.
 *
 * For a driver that declares ESTC_CAP_ATTRIBUTES the part after the scheme is
 * RFC 7512-style "path?query": path attributes separated by ';', query
 * attributes by '&', each "name=value" with a percent-encoded value. Empty
 * segments are skipped; a segment without '=', an empty or malformed name,
 * bad percent-encoding and an attribute given twice (in the path, the query,
 * or both) are refused. For other drivers the address is opaque: @body is
 * all there is and no attribute is parsed.
 */
typedef struct estc_address {
    const char *text;     /* the whole address as given: may hold a PIN, never print it */
    const char *redacted; /* @text with secrets hidden (see estc_redact()): for messages */
    char scheme[ESTC_SCHEME_MAX + 1]; /* lower case, without ':' */
    const char *body;     /* everything after "scheme:", verbatim */
    const char *query_text; /* with attributes: the query after '?', verbatim ("" if none),
                               for drivers that carry a prefix's query into derived addresses */
    const estc_attr *path;
    size_t n_path;
    const estc_attr *query;
    size_t n_query;
} estc_address;

/**
 * estc_address_parse() - parse @text into a new address (*@out; release it
 * with estc_address_free()).
 * @attributes: parse RFC 7512 attributes (see struct estc_address).
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_BAD_ADDRESS (with the
 * reason in nothing but the return code: the caller names the address) or
 * ESTC_ERR_NOMEM. *@out is untouched on failure.
 */
estc_err estc_address_parse(const char *text, bool attributes, estc_address **out);

/** estc_address_free() - release a parsed address. Accepts NULL. */
void estc_address_free(estc_address *addr);

/**
 * estc_address_get() - the attribute called @name, searched in the path and
 * the query (a name can be in one of them only), or NULL when absent.
 */
const estc_attr *estc_address_get(const estc_address *addr, const char *name);

/**
 * estc_address_attr() - find attribute @name in an RFC 7512-style address
 * string: estc_address_parse() with attributes and estc_address_get() in one
 * call. The value is copied into a new NUL-terminated string in *@value
 * (free() it); @value_len (optional) receives its length.
 *
 * Returns ESTC_OK, ESTC_ERR_NOT_FOUND (no such attribute; *@value is NULL),
 * ESTC_ERR_BAD_ADDRESS (a malformed address, see struct estc_address),
 * ESTC_ERR_INVALID_ARG or ESTC_ERR_NOMEM.
 */
estc_err estc_address_attr(const char *addr, const char *name, char **value, size_t *value_len);

/**
 * estc_pct_decode() - percent-decode @len bytes of @in into a new string.
 *
 * Returns ESTC_OK, ESTC_ERR_BAD_ADDRESS ('%' not followed by two hex digits),
 * ESTC_ERR_INVALID_ARG or ESTC_ERR_NOMEM.
 */
estc_err estc_pct_decode(const char *in, size_t len, char **out, size_t *out_len);

/**
 * estc_redact() - copy @text into @out (@out_size bytes, always
 * NUL-terminated, cut when too long) with every secret hidden: the value of
 * each "pin-value=" attribute, up to the next ';', '&', '?', blank or the
 * end, becomes "***". The one redaction used by every error text, log line
 * and provider message; use it for anything that may contain an address.
 * Returns @out ("" for a NULL @text).
 */
char *estc_redact(const char *text, char *out, size_t out_size);

/* ------------------------------------------------------------------------ */
/* The driver API                                                            */
/* ------------------------------------------------------------------------ */

/* Bump on any incompatible change of struct estc_driver. Version 2: the
 * operations receive parsed addresses, and drivers declare capabilities. */
#define ESTC_DRIVER_API_VERSION 2

typedef enum estc_key_type {
    ESTC_KEY_EC_P256 = 1, /* required of every driver */
    ESTC_KEY_EC_P384,
    ESTC_KEY_RSA_2048,
    ESTC_KEY_RSA_3072,
} estc_key_type;

typedef enum estc_sig_alg {
    ESTC_SIG_ECDSA = 1, /* output: DER ECDSA-Sig-Value (SEQUENCE { r, s }) */
    ESTC_SIG_RSA_PKCS1, /* RSASSA-PKCS1-v1_5 over a DigestInfo of the digest */
    ESTC_SIG_RSA_PSS,   /* RSASSA-PSS, MGF1 with the same hash, salt = hash length */
} estc_sig_alg;

typedef enum estc_hash {
    ESTC_HASH_SHA256 = 1,
    ESTC_HASH_SHA384,
    ESTC_HASH_SHA512,
} estc_hash;

typedef enum estc_obj_kind {
    ESTC_OBJ_KEY = 1, /* a key pair (private and public parts) */
    ESTC_OBJ_CERT,    /* an end-entity certificate */
    ESTC_OBJ_TRUST,   /* a trust-store (CA) certificate */
} estc_obj_kind;

/*
 * What a driver is, declared in estc_driver.caps. The library and the tools
 * decide by these flags, never by the scheme's name.
 */
enum estc_driver_cap {
    /* Addresses are RFC 7512 attribute lists ("token=T;object=K?pin-source=F");
     * the framework parses them (struct estc_address). */
    ESTC_CAP_ATTRIBUTES = 1u << 0,
    /* Objects live in process memory and vanish with the context: the
     * persisted state must carry them, and it is the engine used when no
     * address is configured. */
    ESTC_CAP_VOLATILE = 1u << 1,
    /* key_export is offered: private keys may be written into the persisted
     * state. Only for software engines whose keys are in memory anyway. */
    ESTC_CAP_KEY_EXPORT = 1u << 2,
    /* Objects are PEM files that OpenSSL reads by itself; key_file_path is
     * offered and a plain file path maps to "scheme:path". */
    ESTC_CAP_FILES = 1u << 3,
};
#define ESTC_CAP_ALL (ESTC_CAP_ATTRIBUTES | ESTC_CAP_VOLATILE | ESTC_CAP_KEY_EXPORT | ESTC_CAP_FILES)

/* Called once per object by estc_driver.list; return false to stop early. */
typedef bool (*estc_list_fn)(void *arg, const char *addr, estc_obj_kind kind);

/*
 * One engine driver. Every address handed to an operation is parsed by the
 * framework (struct estc_address; its scheme is the driver's). The driver
 * reports failures with estc_error() so that the detail names the address
 * (addr->text: estc_error() hides secrets) and the engine's own code. @state
 * is the driver's private state of state_size bytes, zeroed and passed to
 * init() when the driver is registered on a context, and to cleanup() when
 * the context is freed.
 *
 * Required operations: key_generate, key_public, key_sign, key_remove,
 * cert_store, cert_load, cert_remove, list, exists, address_derive.
 * Optional ones may be NULL: init, cleanup, key_import (the library answers
 * ESTC_ERR_UNSUPPORTED). key_export and key_file_path are present exactly
 * when the matching capability is declared.
 */
struct estc_driver {
    unsigned api_version;    /* ESTC_DRIVER_API_VERSION */
    const char *scheme;      /* "pkcs11": lower case, no ':' */
    const char *description; /* one line, for listings */
    size_t state_size;
    unsigned caps;           /* enum estc_driver_cap flags */

    estc_err (*init)(estc_ctx *ctx, void *state);
    void (*cleanup)(estc_ctx *ctx, void *state);

    /* Create a non-exportable key pair at @addr. ESTC_ERR_EXISTS when
     * something is there, ESTC_ERR_UNSUPPORTED for a type it cannot make.
     * On failure nothing is left at @addr. */
    estc_err (*key_generate)(estc_ctx *ctx, void *state, const estc_address *addr,
                             estc_key_type type);
    /* Import a PKCS#8 private key (server-side key generation) as a
     * non-exportable key pair at @addr. Same failures as key_generate. */
    estc_err (*key_import)(estc_ctx *ctx, void *state, const estc_address *addr,
                           const uint8_t *pkcs8, size_t pkcs8_len);
    /* The public key as SubjectPublicKeyInfo DER into @spki. */
    estc_err (*key_public)(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *spki);
    /* Sign a digest of @hash (its length matches the hash) into @sig. */
    estc_err (*key_sign)(estc_ctx *ctx, void *state, const estc_address *addr, estc_sig_alg alg,
                         estc_hash hash, const uint8_t *digest, size_t digest_len, estc_buf *sig);
    /* Remove both parts of a key pair; ESTC_ERR_NOT_FOUND when absent. */
    estc_err (*key_remove)(estc_ctx *ctx, void *state, const estc_address *addr);

    /* Store a DER certificate of @kind (ESTC_OBJ_CERT or ESTC_OBJ_TRUST) at
     * @addr; ESTC_ERR_EXISTS when something is there. On failure nothing is
     * left at @addr. */
    estc_err (*cert_store)(estc_ctx *ctx, void *state, const estc_address *addr,
                           estc_obj_kind kind, const uint8_t *der, size_t der_len);
    /* Load the certificate at @addr (either kind), byte-exact, into @der. */
    estc_err (*cert_load)(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *der);
    /* Remove the certificate at @addr; ESTC_ERR_NOT_FOUND when absent. */
    estc_err (*cert_remove)(estc_ctx *ctx, void *state, const estc_address *addr);

    /* Call @fn for every object of @kind whose address was derived from
     * @prefix (see address_derive). ESTC_ERR_UNSUPPORTED where the engine
     * cannot enumerate that kind; ESTC_OBJ_TRUST must always be listable. */
    estc_err (*list)(estc_ctx *ctx, void *state, const estc_address *prefix, estc_obj_kind kind,
                     estc_list_fn fn, void *arg);
    /* Set *@found to whether an object of @kind is at @addr. */
    estc_err (*exists)(estc_ctx *ctx, void *state, const estc_address *addr, estc_obj_kind kind,
                       bool *found);
    /* Compose the address of the object called @name (letters, digits, '-',
     * '_', at most 64 bytes) of @kind under @prefix, into a new string in
     * *@addr (free() it). Deterministic: same inputs, same address. */
    estc_err (*address_derive)(estc_ctx *ctx, void *state, const estc_address *prefix,
                               estc_obj_kind kind, const char *name, char **addr);

    /* ESTC_CAP_KEY_EXPORT only: the private key at @addr as PKCS#8 DER into
     * @pkcs8, for the persisted state. */
    estc_err (*key_export)(estc_ctx *ctx, void *state, const estc_address *addr, estc_buf *pkcs8);
    /* ESTC_CAP_FILES only: the path of the PEM file OpenSSL reads for the key
     * at @addr, as a new string in *@path (free() it). */
    estc_err (*key_file_path)(estc_ctx *ctx, void *state, const estc_address *addr, char **path);
};

/**
 * estc_engine_register() - add a driver to @ctx under its scheme.
 *
 * The driver structure must outlive the context. Its init() runs now.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_DRIVER (another API
 * version, a required operation missing, a malformed scheme),
 * ESTC_ERR_EXISTS (the scheme is taken: no silent replace), ESTC_ERR_NOMEM,
 * or what init() returned.
 */
estc_err estc_engine_register(estc_ctx *ctx, const struct estc_driver *driver);

/* The symbol a driver module exports: a function returning its driver. */
#define ESTC_DRIVER_ENTRY "estc_driver_entry"
typedef const struct estc_driver *(*estc_driver_entry_fn)(void);

/**
 * estc_engine_load_module() - dlopen() @path and register the driver that
 * its ESTC_DRIVER_ENTRY function returns.
 *
 * The module stays loaded until the context is freed.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_IO (cannot load; the detail
 * has dlerror()), ESTC_ERR_DRIVER (no entry point, or entry returned NULL),
 * or what estc_engine_register() returns.
 */
estc_err estc_engine_load_module(estc_ctx *ctx, const char *path);

/**
 * estc_engine_find() - the driver registered for the scheme of @addr.
 *
 * @addr may be a bare scheme with ':' ("pkcs11:"). The driver of a plug-in
 * (pkcs11, tpm2, psa) is loaded here on first use. Returns ESTC_OK,
 * ESTC_ERR_INVALID_ARG, ESTC_ERR_BAD_ADDRESS, ESTC_ERR_UNKNOWN_SCHEME, or
 * ESTC_ERR_UNSUPPORTED (the scheme's plug-in cannot be loaded: the detail
 * names the scheme and dlerror()'s reason; the same holds for every
 * operation on an address of that scheme).
 */
estc_err estc_engine_find(estc_ctx *ctx, const char *addr, const struct estc_driver **driver);

/**
 * estc_engine_known() - whether the scheme of @addr is registered: a
 * built-in driver, one registered by the application or loaded with
 * estc_engine_load_module(), or an optional driver built as a plug-in
 * (pkcs11, tpm2, psa), loaded or not.
 *
 * Nothing is loaded here: a plug-in's scheme is known even when its plug-in
 * is missing or cannot be loaded, and the first use of such an address then
 * fails with the reason (see estc_engine_find()). This is how the library
 * and the estc tool tell an engine address from a file name. @addr may be a
 * bare scheme with ':'. False for a NULL argument and for a string without a
 * valid scheme (a path such as "/etc/key.pem" or "./a:b"); no error detail
 * is set either way.
 */
bool estc_engine_known(estc_ctx *ctx, const char *addr);

/**
 * estc_engine_caps() - the capability flags (enum estc_driver_cap) of the
 * driver for the scheme of @addr; 0 when there is none or @addr is bad.
 * @addr may be a bare scheme with ':'.
 */
unsigned estc_engine_caps(estc_ctx *ctx, const char *addr);

/**
 * estc_engine_set_default() - give every address of @scheme that lacks the
 * attribute @name the query attribute @name=@value (@value NULL removes the
 * default). For configuration that belongs to the context rather than to
 * each address: the default PKCS#11 module ("pkcs11", "module-path"), the
 * default TCTI ("tpm2", "tcti"). An attribute in the address wins. The
 * default is added to what the driver receives only: addresses are shown,
 * stored and derived as given.
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_UNKNOWN_SCHEME,
 * ESTC_ERR_UNSUPPORTED (the engine takes no attributes) or ESTC_ERR_NOMEM.
 */
estc_err estc_engine_set_default(estc_ctx *ctx, const char *scheme, const char *name,
                                 const char *value);

/**
 * estc_engine_find_cap() - the first registered driver (in registration
 * order) that has every flag of @caps; for example the engine to use when no
 * address is configured is the first with ESTC_CAP_VOLATILE.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG or ESTC_ERR_UNKNOWN_SCHEME (none).
 */
estc_err estc_engine_find_cap(estc_ctx *ctx, unsigned caps, const struct estc_driver **driver);

/**
 * estc_engine_schemes() - call @fn with each registered scheme, in
 * registration order. An optional driver built as a plug-in that is not
 * loaded yet is reported by a placeholder: its scheme alone, capabilities 0,
 * no operations (estc_engine_find() on its scheme loads it). Returns
 * ESTC_OK or ESTC_ERR_INVALID_ARG.
 */
estc_err estc_engine_schemes(estc_ctx *ctx, void (*fn)(void *arg, const struct estc_driver *drv),
                             void *arg);

/* ------------------------------------------------------------------------ */
/* Engine operations, dispatched by address scheme                           */
/* ------------------------------------------------------------------------ */
/*
 * Each checks its arguments and the address, finds the driver and calls it.
 * Besides what the driver returns, each can return ESTC_ERR_INVALID_ARG,
 * ESTC_ERR_BAD_ADDRESS and ESTC_ERR_UNKNOWN_SCHEME. Output buffers are
 * replaced only on success.
 */

estc_err estc_key_generate(estc_ctx *ctx, const char *addr, estc_key_type type);
estc_err estc_key_import(estc_ctx *ctx, const char *addr, const uint8_t *pkcs8, size_t len);
estc_err estc_key_public(estc_ctx *ctx, const char *addr, estc_buf *spki);
/* Also checks that @digest_len matches @hash (ESTC_ERR_INVALID_ARG). */
estc_err estc_key_sign(estc_ctx *ctx, const char *addr, estc_sig_alg alg, estc_hash hash,
                       const uint8_t *digest, size_t digest_len, estc_buf *sig);
estc_err estc_key_remove(estc_ctx *ctx, const char *addr);

/**
 * estc_key_export() - the private key at @addr as PKCS#8 DER into @pkcs8
 * (wipe it with estc_buf_free()), for the persisted state. Only engines that
 * declare ESTC_CAP_KEY_EXPORT (software keys in process memory) answer; every
 * other gives ESTC_ERR_UNSUPPORTED.
 */
estc_err estc_key_export(estc_ctx *ctx, const char *addr, estc_buf *pkcs8);

/**
 * estc_key_file_path() - the PEM file OpenSSL reads for the key at @addr, as
 * a new string in *@path (free() it). ESTC_ERR_UNSUPPORTED unless the engine
 * declares ESTC_CAP_FILES.
 */
estc_err estc_key_file_path(estc_ctx *ctx, const char *addr, char **path);

/**
 * estc_address_for_file() - the address of the file at @path in the first
 * engine that declares ESTC_CAP_FILES, as a new string in *@addr (free() it).
 * A relative @path is made absolute once, here, so that the address does not
 * depend on the current folder later. The file need not exist.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_IO (no current folder),
 * ESTC_ERR_BAD_ADDRESS (too long), ESTC_ERR_UNKNOWN_SCHEME or ESTC_ERR_NOMEM.
 */
estc_err estc_address_for_file(estc_ctx *ctx, const char *path, char **addr);

/* Also checks that @der is one whole DER certificate (ESTC_ERR_FORMAT). */
estc_err estc_cert_store(estc_ctx *ctx, const char *addr, const uint8_t *der, size_t len);
estc_err estc_cert_load(estc_ctx *ctx, const char *addr, estc_buf *der);
estc_err estc_cert_remove(estc_ctx *ctx, const char *addr);

/* The trust store: CA certificates kept as ESTC_OBJ_TRUST objects. */
estc_err estc_trust_store(estc_ctx *ctx, const char *addr, const uint8_t *der, size_t len);
estc_err estc_trust_remove(estc_ctx *ctx, const char *addr);
/* Calls @fn with each trust-store address under @prefix. */
estc_err estc_trust_list(estc_ctx *ctx, const char *prefix, estc_list_fn fn, void *arg);

estc_err estc_object_list(estc_ctx *ctx, const char *prefix, estc_obj_kind kind, estc_list_fn fn,
                          void *arg);
estc_err estc_object_exists(estc_ctx *ctx, const char *addr, estc_obj_kind kind, bool *found);
/* Removes an object of any kind (key_remove or cert_remove). */
estc_err estc_object_remove(estc_ctx *ctx, const char *addr, estc_obj_kind kind);

/**
 * estc_address_derive() - the address of object @name of @kind under
 * @prefix, through the prefix's driver. *@addr is a new string (free() it).
 * Also returns ESTC_ERR_INVALID_ARG for a @name outside [A-Za-z0-9_-]{1,64}.
 */
estc_err estc_address_derive(estc_ctx *ctx, const char *prefix, estc_obj_kind kind,
                             const char *name, char **addr);

/* ------------------------------------------------------------------------ */
/* Files                                                                     */
/* ------------------------------------------------------------------------ */

/* Flags of estc_file_write(). */
#define ESTC_FILE_REPLACE 1u /* replace an existing file; without it, ESTC_ERR_EXISTS */

/**
 * estc_file_write() - write @len bytes to @path all or nothing: a temporary
 * file in the same folder with @mode from the start, fsync, then rename()
 * (with ESTC_FILE_REPLACE) or link() (never replacing), then fsync of the
 * folder so that the new name survives a power cut. On any failure @path is
 * as it was and no temporary file is left. For drivers, the state file and
 * the tools: the one implementation of the rule.
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_EXISTS, ESTC_ERR_NOT_FOUND
 * (no such folder), ESTC_ERR_AUTH (permission denied) or ESTC_ERR_IO, with
 * the system's reason in the detail text (a NULL @ctx only returns it). A
 * failure of a system call also leaves its errno set, for a caller without
 * a context.
 */
estc_err estc_file_write(estc_ctx *ctx, const char *path, const void *data, size_t len,
                         unsigned mode, unsigned flags);

/* ------------------------------------------------------------------------ */
/* Address generators                                                        */
/* ------------------------------------------------------------------------ */

/*
 * Asked for a fresh address when the library must create an object: one per
 * trusted CA certificate from /crts, one per new key at rekey. @der is the
 * certificate (NULL with length 0 for a key). Return a whole address, or NULL
 * to fail the operation; the library copies the string at once.
 */
typedef const char *(*estc_address_gen_fn)(void *arg, const void *der, size_t der_len);

/**
 * estc_generator_set() - use @gen for objects created under scheme @scheme
 * (without ':'); @gen NULL restores the default generator.
 *
 * The default names an object "estc-<kind>-<first 16 hex digits of the
 * SHA-256 of @der>" ("estc-trust-1a2b...", random for keys) and lets the
 * driver place it under the configured prefix, so the same CA certificate
 * always gets the same address.
 *
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_UNKNOWN_SCHEME or
 * ESTC_ERR_NOMEM.
 */
estc_err estc_generator_set(estc_ctx *ctx, const char *scheme, estc_address_gen_fn gen, void *arg);

/**
 * estc_address_generate() - a new address for an object of @kind under
 * @prefix, made by the scheme's generator (see estc_generator_set()).
 *
 * A custom generator's answer must have the prefix's scheme.
 * Returns ESTC_OK, ESTC_ERR_INVALID_ARG, ESTC_ERR_BAD_ADDRESS (the generator
 * returned NULL, or a bad or foreign address), ESTC_ERR_UNKNOWN_SCHEME,
 * ESTC_ERR_NOMEM or what the driver's address_derive returns.
 */
estc_err estc_address_generate(estc_ctx *ctx, const char *prefix, estc_obj_kind kind,
                               const void *der, size_t der_len, char **addr);

/* ------------------------------------------------------------------------ */
/* Lifecycle tracker                                                         */
/* ------------------------------------------------------------------------ */
/*
 * Records every engine object the library creates, so that none is ever left
 * behind. An object is PENDING from its creation until estc_lifecycle_commit();
 * a committed object that a newer one replaces is marked SUPERSEDED and
 * removed from its engine at the next commit. estc_lifecycle_rollback()
 * removes the pending objects (a failed enrollment). The record can be
 * serialized into the persisted state.
 */

typedef struct estc_lifecycle estc_lifecycle;

typedef enum estc_obj_state {
    ESTC_OBJ_PENDING = 1,
    ESTC_OBJ_COMMITTED,
    ESTC_OBJ_SUPERSEDED,
} estc_obj_state;

/** estc_lifecycle_new() - an empty record. ESTC_ERR_INVALID_ARG / NOMEM. */
estc_err estc_lifecycle_new(estc_ctx *ctx, estc_lifecycle **out);
/** estc_lifecycle_free() - free the record; engine objects stay. Accepts NULL. */
void estc_lifecycle_free(estc_lifecycle *lc);

/* Create an object through its engine and record it as PENDING. On failure
 * nothing is created or recorded. Same errors as the engine operation, and
 * ESTC_ERR_EXISTS when the address is already recorded. */
estc_err estc_lifecycle_key_generate(estc_lifecycle *lc, const char *addr, estc_key_type type);
estc_err estc_lifecycle_key_import(estc_lifecycle *lc, const char *addr, const uint8_t *pkcs8,
                                   size_t len);
estc_err estc_lifecycle_cert_store(estc_lifecycle *lc, const char *addr, estc_obj_kind kind,
                                   const uint8_t *der, size_t len);

/**
 * estc_lifecycle_supersede() - mark the committed object at @addr for removal
 * at the next commit. ESTC_ERR_NOT_FOUND when not recorded, ESTC_ERR_STATE
 * when it is not committed.
 */
estc_err estc_lifecycle_supersede(estc_lifecycle *lc, const char *addr);

/**
 * estc_lifecycle_forget() - drop the object at @addr from the record without
 * touching its engine object (which the record will then never remove).
 * Returns ESTC_OK, ESTC_ERR_NOT_FOUND (not recorded) or ESTC_ERR_INVALID_ARG.
 */
estc_err estc_lifecycle_forget(estc_lifecycle *lc, const char *addr);

/**
 * estc_lifecycle_commit() - make the pending objects committed and remove
 * the superseded ones from their engines and from the record.
 *
 * Every removal is logged at ESTC_LOG_WARNING, so that a daemon shows it at
 * its default verbosity. An object already gone from its engine counts as
 * removed. When a removal
 * fails the object stays SUPERSEDED (retried at the next commit or cleanup)
 * and the first error is returned; the pending objects are committed anyway.
 */
estc_err estc_lifecycle_commit(estc_lifecycle *lc);

/**
 * estc_lifecycle_rollback() - remove the pending objects from their engines
 * and the record, and make superseded objects committed again. This is also
 * the purge of pending objects after a restore following a crash.
 * Returns the first removal error; a failed object stays recorded.
 */
estc_err estc_lifecycle_rollback(estc_lifecycle *lc);

/**
 * estc_lifecycle_cleanup() - remove every recorded object from its engine,
 * unless nothing has changed since the last estc_lifecycle_serialize() or
 * estc_lifecycle_deserialize() (then the persisted references and the
 * engine agree, and the objects are kept). The record is emptied of what was
 * removed. Returns the first removal error.
 */
estc_err estc_lifecycle_cleanup(estc_lifecycle *lc);

/** estc_lifecycle_changed() - whether the record differs from what the last
 * serialize or deserialize saw (an attempt rolled back completely leaves it
 * unchanged); before either, whether anything was ever recorded. */
bool estc_lifecycle_changed(const estc_lifecycle *lc);

/** estc_lifecycle_count() - the number of recorded objects. */
size_t estc_lifecycle_count(const estc_lifecycle *lc);

/**
 * estc_lifecycle_get() - object @index (0 .. count-1): its address (owned by
 * the record, valid until the record changes), kind, state and generation
 * (the commit count when it was created). Any output may be NULL.
 * Returns ESTC_OK or ESTC_ERR_INVALID_ARG (bad index).
 */
estc_err estc_lifecycle_get(const estc_lifecycle *lc, size_t index, const char **addr,
                            estc_obj_kind *kind, estc_obj_state *state, uint32_t *generation);

/**
 * estc_lifecycle_serialize() - the record as bytes into @out (versioned
 * text, one object a line). Marks the record unchanged.
 */
estc_err estc_lifecycle_serialize(estc_lifecycle *lc, estc_buf *out);

/**
 * estc_lifecycle_serialize_view() - the record as it will be, for a journal
 * written ahead of a change: with an object at @planned_addr of
 * @planned_kind recorded as pending before it exists (@planned_addr NULL:
 * none), and with @pending_as_committed the pending objects shown committed
 * (the superseded ones still listed). The record itself is not changed; like
 * estc_lifecycle_serialize() it is marked unchanged, as the caller persists
 * it together with the view.
 */
estc_err estc_lifecycle_serialize_view(estc_lifecycle *lc, const char *planned_addr,
                                       estc_obj_kind planned_kind, bool pending_as_committed,
                                       estc_buf *out);

/**
 * estc_lifecycle_deserialize() - replace the record with one serialized
 * earlier. A malformed or unknown-version record gives ESTC_ERR_FORMAT and
 * leaves the record unchanged. Marks the record unchanged.
 */
estc_err estc_lifecycle_deserialize(estc_lifecycle *lc, const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
