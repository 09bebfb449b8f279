/*
 * The "psa" driver: keys, certificates and trust-store certificates through
 * the PSA Crypto API (mbed TLS 2.28's libmbedcrypto).
 *
 * Addresses (see docs/engines/psa.md):
 *   psa:key-id=0x10001      a persistent key (PSA key identifier)
 *   psa:uid=0x20001         a certificate in Internal Trusted Storage
 *   psa:key-id-range=0x10000-0x1ffff;cert-uid-range=...;trust-uid-range=...
 *                           a prefix: where address_derive() places objects
 *
 * mbed TLS keeps persistent keys and ITS entries in one namespace of 64-bit
 * uids (a key's uid is its key id), as files named after the uid in the
 * process's current folder. The driver never changes that folder; the caller
 * runs it in a private (0700) one.
 *
 * PSA keeps its state per process: psa_crypto_init() is idempotent, and the
 * driver never calls mbedtls_psa_crypto_free(), which would pull the keys
 * from under other users of PSA in the same process.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <psa/crypto.h>

#include "psa_its.h"
#include "util.h"

/* Default ranges of a prefix without range attributes (disjoint). */
#define DEFAULT_KEY_LO 0x10000u
#define DEFAULT_KEY_HI 0x1ffffu
#define DEFAULT_CERT_LO 0x20000u
#define DEFAULT_CERT_HI 0x2ffffu
#define DEFAULT_TRUST_LO 0x30000u
#define DEFAULT_TRUST_HI 0x3ffffu

/* list() probes every id of a range; this bounds its cost (about 3 s). */
#define RANGE_MAX_SPAN 0x100000u

/* uids mbed TLS keeps for itself (transaction file, entropy seed). */
#define RESERVED_UID_LO 0xffffff00u
#define RESERVED_UID_HI 0xffffffffu

/* Largest ITS entry read back as a certificate. */
#define CERT_MAX_LEN 65536u

struct psa_state {
    bool ready; /* psa_crypto_init() succeeded */
};

struct range {
    uint64_t lo, hi;
};

enum {
    ATTR_KEY_ID = 1u << 0,
    ATTR_UID = 1u << 1,
    ATTR_KEY_RANGE = 1u << 2,
    ATTR_CERT_RANGE = 1u << 3,
    ATTR_TRUST_RANGE = 1u << 4,
};

struct psa_addr {
    unsigned seen;
    uint64_t key_id;
    uint64_t uid;
    struct range keys, certs, trust;
};

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

/* Records a failed PSA call: the detail names the address, call and status. */
static estc_err psa_fail(estc_ctx *ctx, const char *addr, const char *call, psa_status_t st)
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

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */
/* ------------------------------------------------------------------------ */

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "0x" and 1-16 hex digits, or 1-20 decimal digits, without overflow. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        if (n - 2 > 16)
            return false;
        for (size_t i = 2; i < n; i++) {
            int d = hex_val(s[i]);
            if (d < 0)
                return false;
            v = (v << 4) | (uint64_t)d;
        }
    } else {
        if (n == 0 || n > 20)
            return false;
        for (size_t i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                return false;
            uint64_t d = (uint64_t)(s[i] - '0');
            if (v > (UINT64_MAX - d) / 10)
                return false;
            v = v * 10 + d;
        }
    }
    *out = v;
    return true;
}

static bool parse_range(const char *s, size_t n, struct range *r)
{
    const char *dash = memchr(s, '-', n);
    if (dash == NULL)
        return false;
    size_t left = (size_t)(dash - s);
    if (!parse_u64(s, left, &r->lo) || !parse_u64(dash + 1, n - left - 1, &r->hi))
        return false;
    return r->lo >= 1 && r->lo <= r->hi;
}

static bool uid_allowed(uint64_t uid)
{
    return uid != 0 && !(uid >= RESERVED_UID_LO && uid <= RESERVED_UID_HI);
}

static bool key_id_allowed(uint64_t id)
{
    return id >= PSA_KEY_ID_USER_MIN && id <= PSA_KEY_ID_USER_MAX;
}

/* One "name=value" attribute (percent-encoded) of @addr into @out. */
static estc_err parse_attr(estc_ctx *ctx, const char *addr, const char *seg, size_t seg_len,
                           unsigned allowed, struct psa_addr *out)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {
        {"key-id", ATTR_KEY_ID},
        {"uid", ATTR_UID},
        {"key-id-range", ATTR_KEY_RANGE},
        {"cert-uid-range", ATTR_CERT_RANGE},
        {"trust-uid-range", ATTR_TRUST_RANGE},
    };
    const char *eq = memchr(seg, '=', seg_len);
    if (eq == NULL || eq == seg)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: expected name=value", addr);
    char *name = NULL, *val = NULL;
    size_t name_len = 0, val_len = 0;
    estc_err err = estc_pct_decode(seg, (size_t)(eq - seg), &name, &name_len);
    if (err == ESTC_OK)
        err = estc_pct_decode(eq + 1, seg_len - (size_t)(eq - seg) - 1, &val, &val_len);
    if (err != ESTC_OK) {
        free(name);
        return estc_error(ctx, err, "%s: bad percent-encoding", addr);
    }
    unsigned bit = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strlen(names[i].name) == name_len && strcmp(names[i].name, name) == 0)
            bit = names[i].bit;
    }
    bool ok = false;
    if (bit == 0 || (bit & allowed) == 0) {
        err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: attribute '%.40s' not valid here", addr,
                         name);
    } else if (out->seen & bit) {
        err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: attribute '%s' given twice", addr, name);
    } else {
        out->seen |= bit;
        switch (bit) {
        case ATTR_KEY_ID:
            ok = parse_u64(val, val_len, &out->key_id) && key_id_allowed(out->key_id);
            break;
        case ATTR_UID:
            ok = parse_u64(val, val_len, &out->uid) && uid_allowed(out->uid);
            break;
        case ATTR_KEY_RANGE:
            ok = parse_range(val, val_len, &out->keys);
            break;
        case ATTR_CERT_RANGE:
            ok = parse_range(val, val_len, &out->certs);
            break;
        default:
            ok = parse_range(val, val_len, &out->trust);
            break;
        }
        if (!ok)
            err = estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: bad value of '%s'", addr, name);
    }
    free(name);
    free(val);
    return err;
}

/*
 * Parses the RFC 7512-style "psa:a=1;b=2?c=3&d=4" strictly: only the
 * attributes in @allowed, each at most once, no empty attribute.
 */
static estc_err parse_addr(estc_ctx *ctx, const char *addr, unsigned allowed, struct psa_addr *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = strchr(addr, ':');
    if (p == NULL)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: no scheme", addr);
    p++;
    const char *query = strchr(p, '?');
    const char *path_end = query != NULL ? query : p + strlen(p);
    /* The path part, then the query part, each a list of attributes. */
    for (int part = 0; part < 2; part++) {
        const char *end = part == 0 ? path_end : (query != NULL ? query + strlen(query) : NULL);
        char sep = part == 0 ? ';' : '&';
        if (part == 1) {
            if (query == NULL)
                break;
            p = query + 1;
            if (p == end)
                return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: empty query", addr);
        }
        while (p < end) {
            const char *stop = memchr(p, sep, (size_t)(end - p));
            if (stop == NULL)
                stop = end;
            estc_err err = parse_attr(ctx, addr, p, (size_t)(stop - p), allowed, out);
            if (err != ESTC_OK)
                return err;
            p = stop;
            if (p < end && ++p == end)
                return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: trailing '%c'", addr, sep);
        }
    }
    return ESTC_OK;
}

static estc_err parse_key_addr(estc_ctx *ctx, const char *addr, mbedtls_svc_key_id_t *id)
{
    struct psa_addr a;
    estc_err err = parse_addr(ctx, addr, ATTR_KEY_ID, &a);
    if (err != ESTC_OK)
        return err;
    if (!(a.seen & ATTR_KEY_ID))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: a key address needs key-id=", addr);
    *id = mbedtls_svc_key_id_make(0, (psa_key_id_t)a.key_id);
    return ESTC_OK;
}

static estc_err parse_uid_addr(estc_ctx *ctx, const char *addr, psa_storage_uid_t *uid)
{
    struct psa_addr a;
    estc_err err = parse_addr(ctx, addr, ATTR_UID, &a);
    if (err != ESTC_OK)
        return err;
    if (!(a.seen & ATTR_UID))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: a certificate address needs uid=", addr);
    *uid = a.uid;
    return ESTC_OK;
}

static bool overlap(const struct range *a, const struct range *b)
{
    return a->lo <= b->hi && b->lo <= a->hi;
}

static bool range_has_reserved(const struct range *r)
{
    return r->lo <= RESERVED_UID_HI && RESERVED_UID_LO <= r->hi;
}

/* A prefix: its three ranges, defaults filled in, checked to be disjoint. */
static estc_err parse_prefix(estc_ctx *ctx, const char *prefix, struct psa_addr *a)
{
    estc_err err = parse_addr(ctx, prefix, ATTR_KEY_RANGE | ATTR_CERT_RANGE | ATTR_TRUST_RANGE, a);
    if (err != ESTC_OK)
        return err;
    if (!(a->seen & ATTR_KEY_RANGE))
        a->keys = (struct range){DEFAULT_KEY_LO, DEFAULT_KEY_HI};
    if (!(a->seen & ATTR_CERT_RANGE))
        a->certs = (struct range){DEFAULT_CERT_LO, DEFAULT_CERT_HI};
    if (!(a->seen & ATTR_TRUST_RANGE))
        a->trust = (struct range){DEFAULT_TRUST_LO, DEFAULT_TRUST_HI};
    if (!key_id_allowed(a->keys.lo) || !key_id_allowed(a->keys.hi))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: key-id-range outside the PSA user range 0x1-0x3fffffff", prefix);
    const struct range *all[] = {&a->keys, &a->certs, &a->trust};
    for (size_t i = 0; i < 3; i++) {
        if (all[i]->hi - all[i]->lo >= RANGE_MAX_SPAN)
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: a range spans over 0x%x ids", prefix,
                              RANGE_MAX_SPAN);
        if (range_has_reserved(all[i]))
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                              "%s: a range includes the uids 0xffffff00-0xffffffff that mbed TLS "
                              "reserves",
                              prefix);
    }
    /* Keys and ITS entries share one uid namespace: all three must be apart. */
    if (overlap(&a->keys, &a->certs) || overlap(&a->keys, &a->trust) ||
        overlap(&a->certs, &a->trust))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: the ranges overlap", prefix);
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static estc_err ensure_init(estc_ctx *ctx, struct psa_state *st, const char *addr)
{
    if (st->ready)
        return ESTC_OK;
    psa_status_t s = psa_crypto_init();
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_crypto_init", s);
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

/*
 * mbed TLS's file backend creates entries with the process umask (often
 * 0644); a key file holds the private key, so narrow it to 0600. The name is
 * the backend's "%08x%08x.psa_its"; other backends have no such file.
 */
static void protect_key_file(estc_ctx *ctx, const char *addr, uint64_t uid)
{
    char name[64];
    snprintf(name, sizeof(name), "%08lx%08lx.psa_its", (unsigned long)(uid >> 32),
             (unsigned long)(uid & 0xffffffffu));
    if (chmod(name, S_IRUSR | S_IWUSR) != 0 && errno != ENOENT)
        estc_log(ctx, ESTC_LOG_WARNING, "%s: chmod 0600 of the key file: %s", addr,
                 strerror(errno));
}

static psa_algorithm_t hash_alg(estc_hash hash)
{
    switch (hash) {
    case ESTC_HASH_SHA256:
        return PSA_ALG_SHA_256;
    case ESTC_HASH_SHA384:
        return PSA_ALG_SHA_384;
    case ESTC_HASH_SHA512:
        return PSA_ALG_SHA_512;
    }
    return 0;
}

/* Attributes of a new persistent signing key of @type (never exportable). */
static bool key_attributes(estc_key_type type, mbedtls_svc_key_id_t id, psa_key_attributes_t *a)
{
    switch (type) {
    case ESTC_KEY_EC_P256:
    case ESTC_KEY_EC_P384:
        psa_set_key_type(a, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1));
        psa_set_key_bits(a, type == ESTC_KEY_EC_P256 ? 256 : 384);
        psa_set_key_algorithm(a, PSA_ALG_ECDSA(PSA_ALG_ANY_HASH));
        break;
    case ESTC_KEY_RSA_2048:
    case ESTC_KEY_RSA_3072:
        psa_set_key_type(a, PSA_KEY_TYPE_RSA_KEY_PAIR);
        psa_set_key_bits(a, type == ESTC_KEY_RSA_2048 ? 2048 : 3072);
        psa_set_key_algorithm(a, PSA_ALG_RSA_PKCS1V15_SIGN(PSA_ALG_ANY_HASH));
        /* The second permitted algorithm of mbed TLS: the same key signs PSS. */
        psa_set_key_enrollment_algorithm(a, PSA_ALG_RSA_PSS(PSA_ALG_ANY_HASH));
        break;
    default:
        return false;
    }
    psa_set_key_id(a, id);
    psa_set_key_lifetime(a, PSA_KEY_LIFETIME_PERSISTENT);
    psa_set_key_usage_flags(a, PSA_KEY_USAGE_SIGN_HASH | PSA_KEY_USAGE_VERIFY_HASH);
    return true;
}

static uint64_t key_uid(mbedtls_svc_key_id_t id)
{
    return (uint64_t)MBEDTLS_SVC_KEY_ID_GET_KEY_ID(id);
}

/* The key type of an existing key, as the driver API names it. */
static estc_err key_kind(estc_ctx *ctx, const char *addr, mbedtls_svc_key_id_t id,
                         estc_key_type *type)
{
    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    psa_status_t s = psa_get_key_attributes(id, &a);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_get_key_attributes", s);
    psa_key_type_t t = psa_get_key_type(&a);
    size_t bits = psa_get_key_bits(&a);
    psa_reset_key_attributes(&a);
    if (t == PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1) && bits == 256)
        *type = ESTC_KEY_EC_P256;
    else if (t == PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1) && bits == 384)
        *type = ESTC_KEY_EC_P384;
    else if (t == PSA_KEY_TYPE_RSA_KEY_PAIR && bits == 2048)
        *type = ESTC_KEY_RSA_2048;
    else if (t == PSA_KEY_TYPE_RSA_KEY_PAIR && bits == 3072)
        *type = ESTC_KEY_RSA_3072;
    else
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: key type 0x%04x of %zu bits", addr,
                          (unsigned)t, bits);
    return ESTC_OK;
}

/* SubjectPublicKeyInfo of a PKCS#1 RSAPublicKey (what PSA exports for RSA). */
static estc_err rsa_spki(estc_ctx *ctx, const char *addr, const uint8_t *der, size_t len,
                         estc_buf *spki)
{
    const unsigned char *p = der;
    EVP_PKEY *pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)len);
    if (pk == NULL || p != der + len) {
        EVP_PKEY_free(pk);
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: unreadable RSA public key", addr);
    }
    unsigned char *out = NULL;
    int n = i2d_PUBKEY(pk, &out);
    EVP_PKEY_free(pk);
    if (n <= 0)
        return estc_error(ctx, ESTC_ERR_CRYPTO, "%s: i2d_PUBKEY failed", addr);
    estc_err err = estc_buf_set(spki, out, (size_t)n);
    OPENSSL_free(out);
    return err;
}

/* One DER SEQUENCE filling exactly @n bytes: what a certificate entry holds.
 * Anything else (a key file sharing the namespace, foreign data) is refused. */
static bool is_der_sequence(const uint8_t *d, size_t n)
{
    size_t len, hdr;
    if (n < 2 || d[0] != 0x30)
        return false;
    if (d[1] < 0x80) {
        len = d[1];
        hdr = 2;
    } else {
        size_t k = d[1] & 0x7fu;
        if (k == 0 || k > 3 || n < 2 + k)
            return false;
        len = 0;
        for (size_t i = 0; i < k; i++)
            len = (len << 8) | d[2 + i];
        hdr = 2 + k;
    }
    return hdr + len == n;
}

/*
 * Reads the certificate entry at @uid into @der. ESTC_ERR_NOT_FOUND when
 * absent, ESTC_ERR_FORMAT when the entry is not a DER certificate (its bytes
 * are wiped: it may be a key).
 */
static estc_err read_cert(estc_ctx *ctx, const char *addr, psa_storage_uid_t uid, estc_buf *der)
{
    struct psa_storage_info_t info;
    psa_status_t s = psa_its_get_info(uid, &info);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_its_get_info", s);
    if (info.size == 0 || info.size > CERT_MAX_LEN)
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: entry of %u bytes is no certificate", addr,
                          (unsigned)info.size);
    uint8_t *buf = malloc(info.size);
    if (buf == NULL)
        return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", addr);
    size_t got = 0;
    s = psa_its_get(uid, 0, info.size, buf, &got);
    if (s != PSA_SUCCESS || got != info.size || !is_der_sequence(buf, got)) {
        OPENSSL_cleanse(buf, info.size);
        free(buf);
        if (s != PSA_SUCCESS)
            return psa_fail(ctx, addr, "psa_its_get", s);
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: entry holds no DER certificate", addr);
    }
    der->data = buf;
    der->len = got;
    return ESTC_OK;
}

/* ------------------------------------------------------------------------ */
/* Driver operations                                                         */
/* ------------------------------------------------------------------------ */

static estc_err psa_drv_key_generate(estc_ctx *ctx, void *state, const char *addr,
                                     estc_key_type type)
{
    mbedtls_svc_key_id_t id;
    estc_err err = parse_key_addr(ctx, addr, &id);
    if (err == ESTC_OK)
        err = ensure_init(ctx, state, addr);
    if (err != ESTC_OK)
        return err;
    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    if (!key_attributes(type, id, &a))
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: key type %d", addr, (int)type);
    mbedtls_svc_key_id_t made;
    psa_status_t s = psa_generate_key(&a, &made);
    psa_reset_key_attributes(&a);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_generate_key", s);
    protect_key_file(ctx, addr, key_uid(id));
    return ESTC_OK;
}

/* The private key of @pk in PSA's import format, into @out (wipe it after). */
static estc_err import_material(estc_ctx *ctx, const char *addr, EVP_PKEY *pk,
                                psa_key_attributes_t *a, uint8_t **out, size_t *out_len)
{
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64];
        if (!EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            NULL))
            return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: EC key without a named curve", addr);
        estc_key_type type;
        if (strcmp(group, "prime256v1") == 0)
            type = ESTC_KEY_EC_P256;
        else if (strcmp(group, "secp384r1") == 0)
            type = ESTC_KEY_EC_P384;
        else
            return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: curve %s", addr, group);
        size_t flen = estc__ec_field_len(type);
        BIGNUM *d = NULL;
        if (!EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_PRIV_KEY, &d))
            return estc_error(ctx, ESTC_ERR_FORMAT, "%s: EC key without a private part", addr);
        uint8_t *buf = malloc(flen);
        if (buf == NULL) {
            BN_clear_free(d);
            return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", addr);
        }
        int n = BN_bn2binpad(d, buf, (int)flen);
        BN_clear_free(d);
        if (n != (int)flen) {
            OPENSSL_cleanse(buf, flen);
            free(buf);
            return estc_error(ctx, ESTC_ERR_FORMAT, "%s: EC private value out of range", addr);
        }
        key_attributes(type, psa_get_key_id(a), a);
        *out = buf;
        *out_len = flen;
        return ESTC_OK;
    }
    if (EVP_PKEY_is_a(pk, "RSA")) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits != 2048 && bits != 3072)
            return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: RSA key of %d bits", addr, bits);
        /* PSA imports RSA key pairs as PKCS#1 RSAPrivateKey. */
        OSSL_ENCODER_CTX *ec =
            OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_KEYPAIR, "DER", "type-specific", NULL);
        unsigned char *der = NULL;
        size_t der_len = 0;
        bool ok = ec != NULL && OSSL_ENCODER_to_data(ec, &der, &der_len) == 1;
        OSSL_ENCODER_CTX_free(ec);
        if (!ok)
            return estc_error(ctx, ESTC_ERR_CRYPTO, "%s: cannot encode the RSA key", addr);
        uint8_t *buf = malloc(der_len);
        if (buf == NULL) {
            OPENSSL_clear_free(der, der_len);
            return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", addr);
        }
        memcpy(buf, der, der_len);
        OPENSSL_clear_free(der, der_len);
        key_attributes(bits == 2048 ? ESTC_KEY_RSA_2048 : ESTC_KEY_RSA_3072, psa_get_key_id(a), a);
        *out = buf;
        *out_len = der_len;
        return ESTC_OK;
    }
    return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: key algorithm %s", addr,
                      EVP_PKEY_get0_type_name(pk) ? EVP_PKEY_get0_type_name(pk) : "?");
}

static estc_err psa_drv_key_import(estc_ctx *ctx, void *state, const char *addr,
                                   const uint8_t *pkcs8, size_t pkcs8_len)
{
    mbedtls_svc_key_id_t id;
    estc_err err = parse_key_addr(ctx, addr, &id);
    if (err == ESTC_OK)
        err = ensure_init(ctx, state, addr);
    if (err != ESTC_OK)
        return err;
    if (pkcs8 == NULL || pkcs8_len == 0 || pkcs8_len > 65536)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: no key to import", addr);
    EVP_PKEY *pk = NULL;
    if (estc__pkcs8_decode(pkcs8, pkcs8_len, &pk) != ESTC_OK)
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: not one DER PKCS#8 private key", addr);

    psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
    psa_set_key_id(&a, id);
    uint8_t *material = NULL;
    size_t material_len = 0;
    err = import_material(ctx, addr, pk, &a, &material, &material_len);
    EVP_PKEY_free(pk);
    if (err != ESTC_OK) {
        psa_reset_key_attributes(&a);
        return err;
    }
    mbedtls_svc_key_id_t made;
    psa_status_t s = psa_import_key(&a, material, material_len, &made);
    psa_reset_key_attributes(&a);
    OPENSSL_cleanse(material, material_len);
    free(material);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_import_key", s);
    protect_key_file(ctx, addr, key_uid(id));
    return ESTC_OK;
}

static estc_err psa_drv_key_public(estc_ctx *ctx, void *state, const char *addr, estc_buf *spki)
{
    mbedtls_svc_key_id_t id;
    estc_key_type type;
    estc_err err = parse_key_addr(ctx, addr, &id);
    if (err == ESTC_OK)
        err = ensure_init(ctx, state, addr);
    if (err == ESTC_OK)
        err = key_kind(ctx, addr, id, &type);
    if (err != ESTC_OK)
        return err;
    uint8_t buf[PSA_EXPORT_PUBLIC_KEY_MAX_SIZE];
    size_t n = 0;
    psa_status_t s = psa_export_public_key(id, buf, sizeof(buf), &n);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_export_public_key", s);
    if (type == ESTC_KEY_EC_P256 || type == ESTC_KEY_EC_P384) {
        err = estc__spki_from_ec_point(type, buf, n, spki);
        if (err != ESTC_OK)
            return estc_error(ctx, err, "%s: exported EC point unusable", addr);
        return ESTC_OK;
    }
    return rsa_spki(ctx, addr, buf, n, spki);
}

static estc_err psa_drv_key_sign(estc_ctx *ctx, void *state, const char *addr, estc_sig_alg alg,
                                 estc_hash hash, const uint8_t *digest, size_t digest_len,
                                 estc_buf *sig)
{
    mbedtls_svc_key_id_t id;
    estc_key_type type;
    estc_err err = parse_key_addr(ctx, addr, &id);
    if (err != ESTC_OK)
        return err;
    psa_algorithm_t h = hash_alg(hash);
    if (h == 0 || digest == NULL || digest_len != estc__hash_len(hash))
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: digest does not match hash %d", addr,
                          (int)hash);
    err = ensure_init(ctx, state, addr);
    if (err == ESTC_OK)
        err = key_kind(ctx, addr, id, &type);
    if (err != ESTC_OK)
        return err;
    bool ec = type == ESTC_KEY_EC_P256 || type == ESTC_KEY_EC_P384;
    psa_algorithm_t palg;
    if (ec && alg == ESTC_SIG_ECDSA)
        palg = PSA_ALG_ECDSA(h);
    else if (!ec && alg == ESTC_SIG_RSA_PKCS1)
        palg = PSA_ALG_RSA_PKCS1V15_SIGN(h);
    else if (!ec && alg == ESTC_SIG_RSA_PSS)
        palg = PSA_ALG_RSA_PSS(h);
    else
        return estc_error(ctx, ESTC_ERR_UNSUPPORTED, "%s: signature algorithm %d with this key",
                          addr, (int)alg);
    uint8_t out[PSA_SIGNATURE_MAX_SIZE];
    size_t n = 0;
    psa_status_t s = psa_sign_hash(id, palg, digest, digest_len, out, sizeof(out), &n);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_sign_hash", s);
    if (ec) {
        err = estc__ecdsa_raw_to_der(out, n, sig);
        if (err != ESTC_OK)
            return estc_error(ctx, err, "%s: raw ECDSA signature unusable", addr);
        return ESTC_OK;
    }
    return estc_buf_set(sig, out, n);
}

static estc_err psa_drv_key_remove(estc_ctx *ctx, void *state, const char *addr)
{
    mbedtls_svc_key_id_t id;
    estc_err err = parse_key_addr(ctx, addr, &id);
    if (err == ESTC_OK)
        err = ensure_init(ctx, state, addr);
    if (err != ESTC_OK)
        return err;
    psa_status_t s = psa_destroy_key(id);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_destroy_key", s);
    return ESTC_OK;
}

static estc_err psa_drv_cert_store(estc_ctx *ctx, void *state, const char *addr, estc_obj_kind kind,
                                   const uint8_t *der, size_t der_len)
{
    psa_storage_uid_t uid;
    estc_err err = parse_uid_addr(ctx, addr, &uid);
    if (err != ESTC_OK)
        return err;
    if (kind != ESTC_OBJ_CERT && kind != ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: object kind %d is no certificate", addr,
                          (int)kind);
    if (der == NULL || !is_der_sequence(der, der_len) || der_len > CERT_MAX_LEN)
        return estc_error(ctx, ESTC_ERR_FORMAT, "%s: not a DER certificate", addr);
    err = ensure_init(ctx, state, addr);
    if (err != ESTC_OK)
        return err;
    /* psa_its_set() replaces silently; an occupied uid (certificate or key)
     * must stay as it is. */
    struct psa_storage_info_t info;
    psa_status_t s = psa_its_get_info(uid, &info);
    if (s == PSA_SUCCESS)
        return estc_error(ctx, ESTC_ERR_EXISTS, "%s: the uid is in use", addr);
    if (s != PSA_ERROR_DOES_NOT_EXIST)
        return psa_fail(ctx, addr, "psa_its_get_info", s);
    s = psa_its_set(uid, (uint32_t)der_len, der, PSA_STORAGE_FLAG_NONE);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_its_set", s);
    return ESTC_OK;
}

static estc_err psa_drv_cert_load(estc_ctx *ctx, void *state, const char *addr, estc_buf *der)
{
    psa_storage_uid_t uid;
    estc_err err = parse_uid_addr(ctx, addr, &uid);
    if (err == ESTC_OK)
        err = ensure_init(ctx, state, addr);
    if (err != ESTC_OK)
        return err;
    return read_cert(ctx, addr, uid, der);
}

static estc_err psa_drv_cert_remove(estc_ctx *ctx, void *state, const char *addr)
{
    psa_storage_uid_t uid;
    estc_err err = parse_uid_addr(ctx, addr, &uid);
    if (err == ESTC_OK)
        err = ensure_init(ctx, state, addr);
    if (err != ESTC_OK)
        return err;
    /* Only certificate entries go: a key shares the namespace and must be
     * removed through psa_destroy_key(). */
    estc_buf cur = {0};
    err = read_cert(ctx, addr, uid, &cur);
    estc_buf_free(&cur);
    if (err != ESTC_OK)
        return err;
    psa_status_t s = psa_its_remove(uid);
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_its_remove", s);
    return ESTC_OK;
}

static estc_err psa_drv_list(estc_ctx *ctx, void *state, const char *prefix, estc_obj_kind kind,
                             estc_list_fn fn, void *arg)
{
    struct psa_addr p;
    estc_err err = parse_prefix(ctx, prefix, &p);
    if (err != ESTC_OK)
        return err;
    if (fn == NULL || kind < ESTC_OBJ_KEY || kind > ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: bad list arguments", prefix);
    err = ensure_init(ctx, state, prefix);
    if (err != ESTC_OK)
        return err;
    const struct range *r = kind == ESTC_OBJ_KEY    ? &p.keys
                            : kind == ESTC_OBJ_CERT ? &p.certs
                                                    : &p.trust;
    char addr[64];
    for (uint64_t id = r->lo;; id++) {
        bool found = false;
        if (kind == ESTC_OBJ_KEY) {
            psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
            psa_status_t s =
                psa_get_key_attributes(mbedtls_svc_key_id_make(0, (psa_key_id_t)id), &a);
            found = s == PSA_SUCCESS;
            psa_reset_key_attributes(&a);
            snprintf(addr, sizeof(addr), "psa:key-id=0x%" PRIx64, id);
        } else {
            struct psa_storage_info_t info;
            if (psa_its_get_info(id, &info) == PSA_SUCCESS) {
                estc_buf der = {0};
                snprintf(addr, sizeof(addr), "psa:uid=0x%" PRIx64, id);
                /* Foreign entries in the range (keys, other data) are not ours. */
                found = read_cert(NULL, addr, id, &der) == ESTC_OK;
                estc_buf_free(&der);
            }
        }
        if (found && !fn(arg, addr, kind))
            break;
        if (id == r->hi)
            break;
    }
    return ESTC_OK;
}

static estc_err psa_drv_exists(estc_ctx *ctx, void *state, const char *addr, estc_obj_kind kind,
                               bool *found)
{
    *found = false;
    if (kind < ESTC_OBJ_KEY || kind > ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: unknown object kind %d", addr, (int)kind);
    /* A well-formed address of the other form (a key id when a certificate
     * is asked for, or the reverse) holds no object of @kind: generic
     * callers such as the provider's STORE ask for both kinds. */
    struct psa_addr a;
    estc_err err = parse_addr(ctx, addr, ATTR_KEY_ID | ATTR_UID, &a);
    if (err != ESTC_OK)
        return err;
    if (a.seen != ATTR_KEY_ID && a.seen != ATTR_UID)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: names no object (key-id= or uid=)", addr);
    if ((kind == ESTC_OBJ_KEY) != (a.seen == ATTR_KEY_ID))
        return ESTC_OK;
    err = ensure_init(ctx, state, addr);
    if (err != ESTC_OK)
        return err;
    if (kind == ESTC_OBJ_KEY) {
        mbedtls_svc_key_id_t id = mbedtls_svc_key_id_make(0, (psa_key_id_t)a.key_id);
        psa_key_attributes_t a = PSA_KEY_ATTRIBUTES_INIT;
        psa_status_t s = psa_get_key_attributes(id, &a);
        psa_reset_key_attributes(&a);
        /* DATA_INVALID: the uid holds an ITS entry that is not a key. */
        if (s == PSA_SUCCESS)
            *found = true;
        else if (s != PSA_ERROR_DOES_NOT_EXIST && s != PSA_ERROR_INVALID_HANDLE &&
                 s != PSA_ERROR_DATA_INVALID)
            return psa_fail(ctx, addr, "psa_get_key_attributes", s);
        return ESTC_OK;
    }
    psa_storage_uid_t uid = a.uid;
    struct psa_storage_info_t info;
    psa_status_t s = psa_its_get_info(uid, &info);
    if (s == PSA_ERROR_DOES_NOT_EXIST)
        return ESTC_OK;
    if (s != PSA_SUCCESS)
        return psa_fail(ctx, addr, "psa_its_get_info", s);
    estc_buf der = {0};
    err = read_cert(NULL, addr, uid, &der);
    estc_buf_free(&der);
    *found = err == ESTC_OK;
    return ESTC_OK;
}

static estc_err psa_drv_address_derive(estc_ctx *ctx, void *state, const char *prefix,
                                       estc_obj_kind kind, const char *name, char **addr)
{
    (void)state;
    struct psa_addr p;
    estc_err err = parse_prefix(ctx, prefix, &p);
    if (err != ESTC_OK)
        return err;
    if (name == NULL || addr == NULL || kind < ESTC_OBJ_KEY || kind > ESTC_OBJ_TRUST)
        return estc_error(ctx, ESTC_ERR_INVALID_ARG, "%s: bad derive arguments", prefix);
    const struct range *r = kind == ESTC_OBJ_KEY    ? &p.keys
                            : kind == ESTC_OBJ_CERT ? &p.certs
                                                    : &p.trust;
    /* The name's SHA-256 picks the id: the same name always lands on the
     * same id, and distinct names rarely meet (then the create reports
     * ESTC_ERR_EXISTS). */
    char hex[17];
    err = estc__sha256_hex(name, strlen(name), hex, 16);
    if (err != ESTC_OK)
        return estc_error(ctx, err, "%s: hashing the name failed", prefix);
    uint64_t h = 0;
    for (size_t i = 0; i < 16; i++)
        h = (h << 4) | (uint64_t)hex_val(hex[i]);
    uint64_t id = r->lo + h % (r->hi - r->lo + 1);
    char buf[64];
    if (kind == ESTC_OBJ_KEY)
        snprintf(buf, sizeof(buf), "psa:key-id=0x%" PRIx64, id);
    else
        snprintf(buf, sizeof(buf), "psa:uid=0x%" PRIx64, id);
    *addr = strdup(buf);
    if (*addr == NULL)
        return estc_error(ctx, ESTC_ERR_NOMEM, "%s: out of memory", prefix);
    return ESTC_OK;
}

static estc_err psa_drv_init(estc_ctx *ctx, void *state)
{
    (void)ctx;
    ((struct psa_state *)state)->ready = false;
    return ESTC_OK;
}

const struct estc_driver estc__driver_psa = {
    .api_version = ESTC_DRIVER_API_VERSION,
    .scheme = "psa",
    .description = "PSA Crypto API (mbed TLS): persistent keys and ITS certificates",
    .state_size = sizeof(struct psa_state),
    .init = psa_drv_init,
    .cleanup = NULL,
    .key_generate = psa_drv_key_generate,
    .key_import = psa_drv_key_import,
    .key_public = psa_drv_key_public,
    .key_sign = psa_drv_key_sign,
    .key_remove = psa_drv_key_remove,
    .cert_store = psa_drv_cert_store,
    .cert_load = psa_drv_cert_load,
    .cert_remove = psa_drv_cert_remove,
    .list = psa_drv_list,
    .exists = psa_drv_exists,
    .address_derive = psa_drv_address_derive,
};
