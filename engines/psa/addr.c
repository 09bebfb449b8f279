/* SPDX-License-Identifier: Apache-2.0 */
/*
 * psa: addresses. The framework has parsed them (RFC 7512 attributes,
 * percent-decoded, each given once); this file decides what they name:
 *
 *   psa:key-id=0x10001      a persistent key (PSA key identifier)
 *   psa:uid=0x20001         a certificate in Internal Trusted Storage
 *   psa:key-id-range=0x10000-0x1ffff;cert-uid-range=...;trust-uid-range=...
 *                           a prefix: where address_derive() places objects
 *
 * Only the attributes of the form an operation accepts are allowed; the
 * number and range syntax is checked here.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "psa_internal.h"

enum {
    ATTR_KEY_ID = 1u << 0,
    ATTR_UID = 1u << 1,
    ATTR_KEY_RANGE = 1u << 2,
    ATTR_CERT_RANGE = 1u << 3,
    ATTR_TRUST_RANGE = 1u << 4,
};

static const struct {
    const char *name;
    unsigned bit;
    unsigned form; /* the enum psa_form it belongs to */
} attr_names[] = {
    {"key-id", ATTR_KEY_ID, PSA_FORM_KEY},
    {"uid", ATTR_UID, PSA_FORM_CERT},
    {"key-id-range", ATTR_KEY_RANGE, PSA_FORM_PREFIX},
    {"cert-uid-range", ATTR_CERT_RANGE, PSA_FORM_PREFIX},
    {"trust-uid-range", ATTR_TRUST_RANGE, PSA_FORM_PREFIX},
};


/* "0x" and 1-16 hex digits, or 1-20 decimal digits, without overflow. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        if (n - 2 > 16)
            return false;
        for (size_t i = 2; i < n; i++) {
            int d = estc__hex_digit(s[i]);
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

/* "LO-HI", two numbers with 1 <= LO <= HI. */
static bool parse_range(const char *s, size_t n, struct psa_range *r)
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
    return uid != 0 && !(uid >= PSA_RESERVED_UID_LO && uid <= PSA_RESERVED_UID_HI);
}

static bool key_id_allowed(uint64_t id)
{
    return id >= PSA_KEY_ID_USER_MIN && id <= PSA_KEY_ID_USER_MAX;
}

/* One attribute into @t: refused unless it belongs to one of @forms. */
static estc_err read_attr(estc_ctx *ctx, const estc_attr *at, unsigned forms, struct psa_target *t,
                          unsigned *seen)
{
    unsigned bit = 0, form = 0;
    for (size_t i = 0; i < sizeof(attr_names) / sizeof(attr_names[0]); i++) {
        if (strcmp(attr_names[i].name, at->name) == 0) {
            bit = attr_names[i].bit;
            form = attr_names[i].form;
        }
    }
    if ((form & forms) == 0)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: attribute '%.40s' not valid here",
                          t->addr, at->name);
    *seen |= bit;
    uint64_t v = 0;
    bool ok;
    switch (bit) {
    case ATTR_KEY_ID:
        ok = parse_u64(at->value, at->value_len, &v) && key_id_allowed(v);
        t->key_id = mbedtls_svc_key_id_make(0, (psa_key_id_t)v);
        break;
    case ATTR_UID:
        ok = parse_u64(at->value, at->value_len, &v) && uid_allowed(v);
        t->uid = v;
        break;
    case ATTR_KEY_RANGE:
        ok = parse_range(at->value, at->value_len, &t->keys);
        break;
    case ATTR_CERT_RANGE:
        ok = parse_range(at->value, at->value_len, &t->certs);
        break;
    default:
        ok = parse_range(at->value, at->value_len, &t->trust);
        break;
    }
    if (!ok)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: bad value of '%s'", t->addr, at->name);
    return ESTC_OK;
}

static bool overlap(const struct psa_range *a, const struct psa_range *b)
{
    return a->lo <= b->hi && b->lo <= a->hi;
}

static bool range_has_reserved(const struct psa_range *r)
{
    return r->lo <= PSA_RESERVED_UID_HI && PSA_RESERVED_UID_LO <= r->hi;
}

/* A prefix: defaults for the ranges not given, then checked to be apart. */
static estc_err check_prefix(estc_ctx *ctx, struct psa_target *t, unsigned seen)
{
    if (!(seen & ATTR_KEY_RANGE))
        t->keys = (struct psa_range){PSA_DEFAULT_KEY_LO, PSA_DEFAULT_KEY_HI};
    if (!(seen & ATTR_CERT_RANGE))
        t->certs = (struct psa_range){PSA_DEFAULT_CERT_LO, PSA_DEFAULT_CERT_HI};
    if (!(seen & ATTR_TRUST_RANGE))
        t->trust = (struct psa_range){PSA_DEFAULT_TRUST_LO, PSA_DEFAULT_TRUST_HI};
    if (!key_id_allowed(t->keys.lo) || !key_id_allowed(t->keys.hi))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: key-id-range outside the PSA user range 0x1-0x3fffffff", t->addr);
    const struct psa_range *all[] = {&t->keys, &t->certs, &t->trust};
    for (size_t i = 0; i < 3; i++) {
        if (all[i]->hi - all[i]->lo >= PSA_RANGE_MAX_SPAN)
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: a range spans over 0x%x ids", t->addr,
                              PSA_RANGE_MAX_SPAN);
        if (range_has_reserved(all[i]))
            return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                              "%s: a range includes the uids 0xffffff00-0xffffffff that mbed TLS "
                              "reserves",
                              t->addr);
    }
    /* Keys and ITS entries share one uid namespace: all three must be apart. */
    if (overlap(&t->keys, &t->certs) || overlap(&t->keys, &t->trust) ||
        overlap(&t->certs, &t->trust))
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: the ranges overlap", t->addr);
    t->form = PSA_FORM_PREFIX;
    return ESTC_OK;
}

/* An object address: exactly one of key-id= and uid=, of the @forms. */
static estc_err check_object(estc_ctx *ctx, struct psa_target *t, unsigned forms, unsigned seen)
{
    bool key = (seen & ATTR_KEY_ID) != 0, cert = (seen & ATTR_UID) != 0;
    if (forms == PSA_FORM_KEY && !key)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: a key address needs key-id=", t->addr);
    if (forms == PSA_FORM_CERT && !cert)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS,
                          "%s: a certificate address needs uid=", t->addr);
    if (key == cert)
        return estc_error(ctx, ESTC_ERR_BAD_ADDRESS, "%s: names no object (key-id= or uid=)",
                          t->addr);
    t->form = key ? PSA_FORM_KEY : PSA_FORM_CERT;
    return ESTC_OK;
}

estc_err psa__begin(estc_ctx *ctx, struct psa_state *st, const estc_address *addr, unsigned forms,
                    struct psa_target *t)
{
    memset(t, 0, sizeof(*t));
    t->addr = addr->text;
    unsigned seen = 0;
    estc_err err = ESTC_OK;
    for (size_t i = 0; err == ESTC_OK && i < addr->n_path; i++)
        err = read_attr(ctx, &addr->path[i], forms, t, &seen);
    for (size_t i = 0; err == ESTC_OK && i < addr->n_query; i++)
        err = read_attr(ctx, &addr->query[i], forms, t, &seen);
    if (err == ESTC_OK)
        err = forms == PSA_FORM_PREFIX ? check_prefix(ctx, t, seen)
                                       : check_object(ctx, t, forms, seen);
    if (err != ESTC_OK || st == NULL)
        return err;
    return psa__init(ctx, st, t->addr);
}

const struct psa_range *psa__range_of(const struct psa_target *t, estc_obj_kind kind)
{
    return kind == ESTC_OBJ_KEY ? &t->keys : kind == ESTC_OBJ_CERT ? &t->certs : &t->trust;
}

void psa__compose(estc_obj_kind kind, uint64_t id, char buf[PSA_ADDR_BUF])
{
    if (kind == ESTC_OBJ_KEY)
        snprintf(buf, PSA_ADDR_BUF, "psa:key-id=0x%" PRIx64, id);
    else
        snprintf(buf, PSA_ADDR_BUF, "psa:uid=0x%" PRIx64, id);
}

estc_err psa__pick_id(const struct psa_range *r, const char *name, uint64_t *id)
{
    /* The first 8 bytes of SHA-256(name), big-endian. Hashed by PSA itself:
     * through OpenSSL, the first derived address loaded OpenSSL's
     * configuration and default provider into a process that otherwise
     * does not use OpenSSL (about 3 MiB of its pages and 130 KiB of heap). */
    uint8_t digest[32];
    size_t len = 0;
    psa_status_t s = psa_crypto_init();
    if (s == PSA_SUCCESS)
        s = psa_hash_compute(PSA_ALG_SHA_256, (const uint8_t *)name, strlen(name), digest,
                             sizeof(digest), &len);
    if (s != PSA_SUCCESS || len != sizeof(digest))
        return ESTC_ERR_CRYPTO;
    uint64_t h = 0;
    for (size_t i = 0; i < 8; i++)
        h = (h << 8) | digest[i];
    *id = r->lo + h % (r->hi - r->lo + 1);
    return ESTC_OK;
}

uint64_t psa__key_uid(mbedtls_svc_key_id_t id)
{
    return (uint64_t)MBEDTLS_SVC_KEY_ID_GET_KEY_ID(id);
}
