/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The persisted state's encoding: the versioned and checksummed format, and
 * the state a write holds (now, or as it will be after an object is created
 * or a commit is done).
 *
 * Layout: "ESTCSTAT", version (u32 BE), body length (u32 BE), body, then
 * the SHA-256 of everything before it. The body is records: tag (u8),
 * length (u32 BE), value. Every field of a version is known: an unknown tag
 * is a format error, not something to skip.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "persist_format.h"

#define MAGIC "ESTCSTAT"
#define MAGIC_LEN 8
#define HEAD_LEN (MAGIC_LEN + 8)
#define HASH_LEN 32
#define STATE_MAX ESTC__STATE_BODY_MAX
_Static_assert(ESTC__STATE_FILE_MAX == STATE_MAX + HEAD_LEN + HASH_LEN, "the state's frame");

enum tag {
    T_KEY_ADDR = 1,
    T_CERT_ADDR,
    T_KEY_BASE,
    T_CERT_BASE,
    T_CA_PREFIX,
    T_CERT,          /* DER of the enrolled certificate */
    T_CA,            /* u16 address length, address, DER */
    T_HAVE_EXPLICIT, /* u8 */
    T_PROVISIONED,   /* i64 */
    T_CERT_HASH,     /* 32 bytes */
    T_RETRY_AT,      /* i64 */
    T_FAILURES,      /* u32 */
    T_FLAGS,         /* u8: FLAG_* */
    T_LIFECYCLE,     /* estc_lifecycle_serialize() text */
    T_MEM_KEY,       /* u16 address length, address, PKCS#8 */
    T_DEADLINE,      /* i64: the next deadline when written (informational) */
    T_LAST_ERROR,    /* i64 time, u32 estc_err (> 0), detail text (redacted); after a failure */
    T_TAG_END,
};

#define FLAG_FALLBACK 1u
#define FLAG_CRTS_DUE 2u

/* ---- writing --------------------------------------------------------------- */

struct writer {
    uint8_t *data;
    size_t len, cap;
    bool failed;
};

static void put(struct writer *w, const void *p, size_t n)
{
    if (w->failed)
        return;
    if (w->len + n > w->cap) {
        size_t ncap = w->cap == 0 ? 1024 : w->cap;
        while (ncap < w->len + n)
            ncap *= 2;
        uint8_t *grown = malloc(ncap);
        if (grown == NULL) {
            w->failed = true;
            return;
        }
        if (w->len > 0)
            memcpy(grown, w->data, w->len);
        /* The state may hold private keys: no stale copies. */
        if (w->data != NULL)
            OPENSSL_cleanse(w->data, w->cap);
        free(w->data);
        w->data = grown;
        w->cap = ncap;
    }
    if (n > 0)
        memcpy(w->data + w->len, p, n);
    w->len += n;
}

static void put_u32(struct writer *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(w, b, 4);
}

static void put_rec(struct writer *w, enum tag t, const void *p, size_t n)
{
    uint8_t tb = (uint8_t)t;
    put(w, &tb, 1);
    put_u32(w, (uint32_t)n);
    put(w, p, n);
}

static void put_str(struct writer *w, enum tag t, const char *s)
{
    if (s != NULL)
        put_rec(w, t, s, strlen(s));
}

static void put_i64(struct writer *w, enum tag t, int64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
    put_rec(w, t, b, 8);
}

/* A record of a u16-length-prefixed address followed by bytes. */
static void put_pair(struct writer *w, enum tag t, const char *addr, const uint8_t *p, size_t n)
{
    size_t al = strlen(addr);
    uint8_t tb = (uint8_t)t, l[2] = {(uint8_t)(al >> 8), (uint8_t)al};
    put(w, &tb, 1);
    put_u32(w, (uint32_t)(2 + al + n));
    put(w, l, 2);
    put(w, addr, al);
    put(w, p, n);
}

static void writer_free(struct writer *w)
{
    if (w->data != NULL)
        OPENSSL_cleanse(w->data, w->cap);
    free(w->data);
    *w = (struct writer){0};
}

/* The lifecycle text as the view has it: an extra pending object, or the
 * pending ones committed; the record's text format is engines/lifecycle.c's. */
static estc_err lifecycle_text(estc_client *c, const struct estc__view *v, estc_buf *out)
{
    if (v->mode == ESTC__VIEW_NOW)
        return estc_lifecycle_serialize(c->lc, out);
    bool intent = v->mode == ESTC__VIEW_INTENT;
    return estc_lifecycle_serialize_view(c->lc, intent ? v->intent_addr : NULL,
                                         intent ? v->intent_kind : ESTC_OBJ_KEY,
                                         v->mode == ESTC__VIEW_COMMIT, out);
}

bool estc__is_volatile(estc_client *c, const char *addr)
{
    return addr != NULL && (estc_engine_caps(c->ctx, addr) & ESTC_CAP_VOLATILE) != 0;
}

bool estc__key_exportable(estc_client *c, const char *addr)
{
    const unsigned both = ESTC_CAP_VOLATILE | ESTC_CAP_KEY_EXPORT;
    return addr != NULL && (estc_engine_caps(c->ctx, addr) & both) == both;
}

/* Adds the in-memory key at @addr once; keys of other engines and absent
 * keys are skipped. */
static estc_err put_mem_key(estc_client *c, struct writer *w, const char *addr, char ***done,
                            size_t *n_done)
{
    for (size_t i = 0; i < *n_done; i++) {
        if (strcmp((*done)[i], addr) == 0)
            return ESTC_OK;
    }
    estc_buf pk = {0};
    estc_err err = estc_key_export(c->ctx, addr, &pk);
    if (err == ESTC_ERR_UNSUPPORTED || err == ESTC_ERR_NOT_FOUND) {
        estc_ctx_clear_error(c->ctx);
        return ESTC_OK;
    }
    if (err != ESTC_OK)
        return err;
    put_pair(w, T_MEM_KEY, addr, pk.data, pk.len);
    estc_buf_free(&pk);
    char **grown = realloc(*done, (*n_done + 1) * sizeof(*grown));
    if (grown == NULL)
        return ESTC_ERR_NOMEM;
    *done = grown;
    (*done)[(*n_done)++] = (char *)addr;
    return ESTC_OK;
}

estc_err estc__state_encode(estc_client *c, const struct estc__view *v, estc_buf *out)
{
    struct writer body = {0};
    estc_buf lc = {0}, cert = {0};
    char **done = NULL;
    size_t n_done = 0;
    estc_err err = lifecycle_text(c, v, &lc);
    if (err != ESTC_OK)
        return err;
    put_str(&body, T_KEY_ADDR, v->key);
    put_str(&body, T_CERT_ADDR, v->cert);
    put_str(&body, T_KEY_BASE, c->key_base);
    put_str(&body, T_CERT_BASE, c->cert_base);
    put_str(&body, T_CA_PREFIX, c->ca_prefix);
    /* The certificate is read once, for its record and the deadline. */
    const estc_buf *der = v->cert_der;
    if (der == NULL) {
        /* Asked first, so that a missing certificate leaves the context's
         * error detail alone: a journal write during a failed operation's
         * roll-back keeps that failure's detail for the caller. */
        bool have = true;
        if (estc_object_exists(c->ctx, v->cert, ESTC_OBJ_CERT, &have) != ESTC_OK)
            have = true;
        err = have ? estc_cert_load(c->ctx, v->cert, &cert) : ESTC_OK;
        if (err == ESTC_ERR_NOT_FOUND) {
            estc_ctx_clear_error(c->ctx);
            err = ESTC_OK;
        }
        der = &cert;
    }
    if (err == ESTC_OK && der->len > 0)
        put_rec(&body, T_CERT, der->data, der->len);
    for (size_t i = 0; err == ESTC_OK && i < v->n_cas; i++)
        put_pair(&body, T_CA, v->ca_addrs[i], v->cas->items[i].data, v->cas->items[i].len);
    uint8_t b = c->have_explicit || v->n_cas > 0;
    put_rec(&body, T_HAVE_EXPLICIT, &b, 1);
    put_i64(&body, T_PROVISIONED, c->provisioned);
    if (c->have_cert_hash)
        put_rec(&body, T_CERT_HASH, c->cert_hash, HASH_LEN);
    put_i64(&body, T_RETRY_AT, c->retry_at);
    uint8_t fb[4] = {(uint8_t)(c->failures >> 24), (uint8_t)(c->failures >> 16),
                     (uint8_t)(c->failures >> 8), (uint8_t)c->failures};
    put_rec(&body, T_FAILURES, fb, 4);
    uint8_t flags =
        (uint8_t)((c->fallback ? FLAG_FALLBACK : 0) | (c->crts_due ? FLAG_CRTS_DUE : 0));
    put_rec(&body, T_FLAGS, &flags, 1);
    int64_t deadline = ESTC_NEVER;
    struct estc__cert_view cv = {0};
    if (v->mode == ESTC__VIEW_NOW && (der->len == 0 || estc__cert_view_parse(der, &cv) == ESTC_OK))
        deadline = estc__deadline(c, &cv, estc_client_now(c));
    put_i64(&body, T_DEADLINE, deadline);
    if (c->last_error_at != 0) {
        size_t dn = strnlen(c->last_error_detail, sizeof(c->last_error_detail) - 1);
        uint8_t le[12 + ESTC__LAST_ERROR_MAX];
        uint32_t code = (uint32_t)c->last_error;
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)((uint64_t)c->last_error_at >> (56 - 8 * i));
        for (int i = 0; i < 4; i++)
            le[8 + i] = (uint8_t)(code >> (24 - 8 * i));
        memcpy(le + 12, c->last_error_detail, dn);
        put_rec(&body, T_LAST_ERROR, le, 12 + dn);
    }
    put_rec(&body, T_LIFECYCLE, lc.data, lc.len);

    /* mem: keys: the committed ones recorded, and the enrolled one. */
    for (size_t i = 0; err == ESTC_OK && i < estc_lifecycle_count(c->lc); i++) {
        const char *a;
        estc_obj_kind k;
        estc_obj_state st;
        if (estc_lifecycle_get(c->lc, i, &a, &k, &st, NULL) != ESTC_OK || k != ESTC_OBJ_KEY ||
            !estc__key_exportable(c, a))
            continue;
        if (st == ESTC_OBJ_COMMITTED || (v->mode == ESTC__VIEW_COMMIT && st == ESTC_OBJ_PENDING))
            err = put_mem_key(c, &body, a, &done, &n_done);
    }
    if (err == ESTC_OK && estc__key_exportable(c, v->key))
        err = put_mem_key(c, &body, v->key, &done, &n_done);
    free(done);
    estc_buf_free(&lc);
    estc_buf_free(&cert);
    if (err == ESTC_OK && (body.failed || body.len > STATE_MAX))
        err = body.failed ? ESTC_ERR_NOMEM : estc_error(c->ctx, ESTC_ERR_LIMIT, "state too big");
    struct writer all = {0};
    if (err == ESTC_OK) {
        put(&all, MAGIC, MAGIC_LEN);
        put_u32(&all, ESTC_STATE_VERSION);
        put_u32(&all, (uint32_t)body.len);
        put(&all, body.data, body.len);
        uint8_t md[HASH_LEN];
        unsigned mdlen = 0;
        if (!all.failed && EVP_Digest(all.data, all.len, md, &mdlen, EVP_sha256(), NULL) != 1)
            err = estc_error(c->ctx, ESTC_ERR_CRYPTO, "state: SHA-256 failed");
        put(&all, md, HASH_LEN);
        if (err == ESTC_OK && all.failed)
            err = ESTC_ERR_NOMEM;
    }
    writer_free(&body);
    if (err != ESTC_OK) {
        writer_free(&all);
        return err;
    }
    out->data = all.data;
    out->len = all.len;
    return ESTC_OK;
}

void estc__view_now(estc_client *c, struct estc__view *v)
{
    *v = (struct estc__view){.mode = ESTC__VIEW_NOW,
                             .cert = c->cert_addr,
                             .key = c->key_addr,
                             .ca_addrs = c->ca_addrs,
                             .cas = &c->explicit_certs,
                             .n_cas = c->n_ca_addrs};
}

/* ---- reading ------------------------------------------------------------------- */

static void pairs_free(struct estc__state_pair *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].addr);
        estc_buf_free(&p[i].data);
    }
    free(p);
}

void estc__state_free(struct estc__state *p)
{
    free(p->key_addr);
    free(p->cert_addr);
    free(p->key_base);
    free(p->cert_base);
    free(p->ca_prefix);
    estc_buf_free(&p->cert);
    pairs_free(p->cas, p->n_cas);
    pairs_free(p->keys, p->n_keys);
    estc_buf_free(&p->lifecycle);
}

static uint32_t get_u32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* An engine address: text with a scheme, no NUL. */
static estc_err get_addr(const uint8_t *v, size_t n, char **out)
{
    char scheme[ESTC_SCHEME_MAX + 1];
    if (n == 0 || n > ESTC_ADDRESS_MAX || memchr(v, '\0', n) != NULL)
        return ESTC_ERR_FORMAT;
    char *s = strndup((const char *)v, n);
    if (s == NULL)
        return ESTC_ERR_NOMEM;
    if (estc_address_scheme(s, scheme) != ESTC_OK) {
        free(s);
        return ESTC_ERR_FORMAT;
    }
    free(*out);
    *out = s;
    return ESTC_OK;
}

static estc_err get_pair(const uint8_t *v, size_t n, struct estc__state_pair **list, size_t *count)
{
    if (n < 2)
        return ESTC_ERR_FORMAT;
    size_t al = (size_t)v[0] << 8 | v[1];
    if (al > n - 2 || n - 2 - al == 0)
        return ESTC_ERR_FORMAT;
    struct estc__state_pair p = {0};
    estc_err err = get_addr(v + 2, al, &p.addr);
    if (err == ESTC_OK)
        err = estc_buf_set(&p.data, v + 2 + al, n - 2 - al);
    struct estc__state_pair *grown = NULL;
    if (err == ESTC_OK) {
        grown = realloc(*list, (*count + 1) * sizeof(*grown));
        if (grown == NULL)
            err = ESTC_ERR_NOMEM;
    }
    if (err != ESTC_OK) {
        free(p.addr);
        estc_buf_free(&p.data);
        return err;
    }
    *list = grown;
    (*list)[(*count)++] = p;
    return ESTC_OK;
}

static int64_t get_i64(const uint8_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 8; i++)
        x = x << 8 | v[i];
    return (int64_t)x;
}

static estc_err decode_record(struct estc__state *p, bool seen[T_TAG_END], unsigned tag,
                              const uint8_t *v, size_t n)
{
    bool repeatable = tag == T_CA || tag == T_MEM_KEY;
    if (tag == 0 || tag >= T_TAG_END || (seen[tag] && !repeatable))
        return ESTC_ERR_FORMAT;
    seen[tag] = true;
    switch ((enum tag)tag) {
    case T_KEY_ADDR:
        return get_addr(v, n, &p->key_addr);
    case T_CERT_ADDR:
        return get_addr(v, n, &p->cert_addr);
    case T_KEY_BASE:
        return get_addr(v, n, &p->key_base);
    case T_CERT_BASE:
        return get_addr(v, n, &p->cert_base);
    case T_CA_PREFIX:
        return get_addr(v, n, &p->ca_prefix);
    case T_CERT:
        return n == 0 ? ESTC_ERR_FORMAT : estc_buf_set(&p->cert, v, n);
    case T_CA:
        return get_pair(v, n, &p->cas, &p->n_cas);
    case T_MEM_KEY:
        return get_pair(v, n, &p->keys, &p->n_keys);
    case T_HAVE_EXPLICIT:
        if (n != 1 || v[0] > 1)
            return ESTC_ERR_FORMAT;
        p->have_explicit = v[0] == 1;
        return ESTC_OK;
    case T_PROVISIONED:
    case T_RETRY_AT:
    case T_DEADLINE:
        if (n != 8)
            return ESTC_ERR_FORMAT;
        if (tag == T_PROVISIONED)
            p->provisioned = get_i64(v);
        else if (tag == T_RETRY_AT)
            p->retry_at = get_i64(v);
        return ESTC_OK;
    case T_CERT_HASH:
        if (n != HASH_LEN)
            return ESTC_ERR_FORMAT;
        memcpy(p->hash, v, HASH_LEN);
        p->have_hash = true;
        return ESTC_OK;
    case T_FAILURES:
        if (n != 4)
            return ESTC_ERR_FORMAT;
        p->failures = get_u32(v);
        return ESTC_OK;
    case T_FLAGS:
        if (n != 1 || (v[0] & ~(FLAG_FALLBACK | FLAG_CRTS_DUE)) != 0)
            return ESTC_ERR_FORMAT;
        p->fallback = (v[0] & FLAG_FALLBACK) != 0;
        p->crts_due = (v[0] & FLAG_CRTS_DUE) != 0;
        return ESTC_OK;
    case T_LIFECYCLE:
        return estc_buf_set(&p->lifecycle, v, n);
    case T_LAST_ERROR:
        if (n < 12 || n - 12 >= ESTC__LAST_ERROR_MAX || memchr(v + 12, '\0', n - 12) != NULL)
            return ESTC_ERR_FORMAT;
        p->last_error_at = get_i64(v);
        p->last_error = (int32_t)get_u32(v + 8);
        if (p->last_error_at == 0 || p->last_error <= 0)
            return ESTC_ERR_FORMAT;
        memcpy(p->last_error_detail, v + 12, n - 12);
        p->last_error_detail[n - 12] = '\0';
        return ESTC_OK;
    case T_TAG_END:
        break;
    }
    return ESTC_ERR_FORMAT;
}

estc_err estc__state_decode(const uint8_t *d, size_t len, struct estc__state *p)
{
    bool seen[T_TAG_END] = {false};
    if (len < HEAD_LEN + HASH_LEN || memcmp(d, MAGIC, MAGIC_LEN) != 0)
        return ESTC_ERR_FORMAT;
    uint32_t version = get_u32(d + MAGIC_LEN);
    uint32_t body_len = get_u32(d + MAGIC_LEN + 4);
    if (version != ESTC_STATE_VERSION || body_len > STATE_MAX ||
        len != HEAD_LEN + (size_t)body_len + HASH_LEN)
        return ESTC_ERR_FORMAT;
    uint8_t md[HASH_LEN];
    unsigned mdlen = 0;
    if (EVP_Digest(d, HEAD_LEN + body_len, md, &mdlen, EVP_sha256(), NULL) != 1)
        return ESTC_ERR_CRYPTO;
    if (CRYPTO_memcmp(md, d + HEAD_LEN + body_len, HASH_LEN) != 0)
        return ESTC_ERR_FORMAT;
    const uint8_t *b = d + HEAD_LEN, *end = b + body_len;
    while (b < end) {
        if ((size_t)(end - b) < 5)
            return ESTC_ERR_FORMAT;
        unsigned tag = b[0];
        size_t n = get_u32(b + 1);
        b += 5;
        if (n > (size_t)(end - b))
            return ESTC_ERR_FORMAT;
        estc_err err = decode_record(p, seen, tag, b, n);
        if (err != ESTC_OK)
            return err;
        b += n;
    }
    /* The fields every state has. */
    if (!seen[T_KEY_ADDR] || !seen[T_CERT_ADDR] || !seen[T_LIFECYCLE] || !seen[T_PROVISIONED] ||
        !seen[T_FLAGS])
        return ESTC_ERR_FORMAT;
    return ESTC_OK;
}
