/*
 * The client's persisted state: streams (file, memory), the versioned and
 * checksummed format, persist / restore with the crash purge, the journal
 * written while objects change, and cleanup.
 *
 * Layout: "ESTCSTAT", version (u32 BE), body length (u32 BE), body, then
 * the SHA-256 of everything before it. The body is records: tag (u8),
 * length (u32 BE), value. Every field of a version is known: an unknown tag
 * is a format error, not something to skip.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "client_internal.h"

#define MAGIC "ESTCSTAT"
#define MAGIC_LEN 8
#define HEAD_LEN (MAGIC_LEN + 8)
#define HASH_LEN 32
#define STATE_MAX (16u * 1024 * 1024)

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
    T_TAG_END,
};

#define FLAG_FALLBACK 1u
#define FLAG_CRTS_DUE 2u

/* ---- streams --------------------------------------------------------------- */

static estc_err file_write(void *arg, const uint8_t *data, size_t len)
{
    /* The state may hold private keys: 0600 from the start. Every failure
     * to write is ESTC_ERR_IO to the stream's user. */
    estc_err err = estc_file_write(NULL, arg, data, len, 0600, ESTC_FILE_REPLACE);
    return err == ESTC_OK || err == ESTC_ERR_NOMEM ? err : ESTC_ERR_IO;
}

static estc_err file_read(void *arg, estc_buf *out)
{
    int fd = open(arg, O_RDONLY);
    if (fd < 0)
        return errno == ENOENT ? ESTC_ERR_NOT_FOUND : ESTC_ERR_IO;
    estc_buf b = {0};
    size_t cap = 0;
    estc_err err = ESTC_OK;
    for (;;) {
        if (b.len == cap) {
            if (cap >= STATE_MAX + HEAD_LEN + HASH_LEN) {
                err = ESTC_ERR_FORMAT; /* bigger than any state */
                break;
            }
            size_t ncap = cap == 0 ? 4096 : cap * 2;
            uint8_t *grown = realloc(b.data, ncap);
            if (grown == NULL) {
                err = ESTC_ERR_NOMEM;
                break;
            }
            b.data = grown;
            cap = ncap;
        }
        ssize_t r = read(fd, b.data + b.len, cap - b.len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = ESTC_ERR_IO;
            break;
        }
        if (r == 0)
            break;
        b.len += (size_t)r;
    }
    close(fd);
    if (err != ESTC_OK) {
        if (b.data != NULL)
            OPENSSL_cleanse(b.data, cap);
        free(b.data);
        return err;
    }
    *out = b;
    return ESTC_OK;
}

estc_err estc_state_stream_file(estc_state_stream *s, const char *path)
{
    if (s == NULL || path == NULL || path[0] == '\0')
        return ESTC_ERR_INVALID_ARG;
    *s = (estc_state_stream){.write = file_write, .read = file_read, .arg = (void *)path};
    return ESTC_OK;
}

static estc_err mem_write(void *arg, const uint8_t *data, size_t len)
{
    return estc_buf_set(arg, data, len);
}

static estc_err mem_read(void *arg, estc_buf *out)
{
    const estc_buf *store = arg;
    if (store->len == 0)
        return ESTC_ERR_NOT_FOUND;
    estc_buf b = {0};
    estc_err err = estc_buf_set(&b, store->data, store->len);
    if (err == ESTC_OK)
        *out = b;
    return err;
}

estc_err estc_state_stream_mem(estc_state_stream *s, estc_buf *store)
{
    if (s == NULL || store == NULL)
        return ESTC_ERR_INVALID_ARG;
    *s = (estc_state_stream){.write = mem_write, .read = mem_read, .arg = store};
    return ESTC_OK;
}

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

/* How the written state differs from the client's current one. */
enum view_mode { VIEW_NOW, VIEW_INTENT, VIEW_COMMIT };
struct view {
    enum view_mode mode;
    const char *intent_addr; /* VIEW_INTENT: the object about to be created */
    estc_obj_kind intent_kind;
    const char *cert, *key;   /* the addresses to write */
    const estc_buf *cert_der; /* @cert's DER when in hand, else NULL: read it */
    char *const *ca_addrs;
    const estc__der_list *cas;
    size_t n_cas;
};

static const char *kind_word(estc_obj_kind k)
{
    return k == ESTC_OBJ_KEY ? "key" : k == ESTC_OBJ_CERT ? "cert" : "trust";
}

/* The lifecycle text as the view has it: an extra pending object, or the
 * pending ones committed. */
static estc_err lifecycle_text(estc_client *c, const struct view *v, estc_buf *out)
{
    estc_buf text = {0};
    estc_err err = estc_lifecycle_serialize(c->lc, &text);
    if (err != ESTC_OK || v->mode == VIEW_NOW) {
        if (err == ESTC_OK)
            *out = text;
        return err;
    }
    struct writer w = {0};
    const char *p = (const char *)text.data, *end = p + text.len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl != NULL ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        static const char pend[] = " pending ";
        const char *hit = NULL;
        if (v->mode == VIEW_COMMIT && ll > 4 && memcmp(p, "obj ", 4) == 0) {
            /* "obj KIND STATE GEN ADDR": the state is the second word. */
            const char *sp = memchr(p + 4, ' ', ll - 4);
            if (sp != NULL && (size_t)(p + ll - sp) > sizeof(pend) - 1 &&
                memcmp(sp, pend, sizeof(pend) - 1) == 0)
                hit = sp;
        }
        if (hit != NULL) {
            put(&w, p, (size_t)(hit - p));
            put(&w, " committed ", 11);
            put(&w, hit + sizeof(pend) - 1, ll - (size_t)(hit - p) - (sizeof(pend) - 1));
        } else {
            put(&w, p, ll);
        }
        p += ll;
    }
    if (v->mode == VIEW_INTENT) {
        char line[64];
        snprintf(line, sizeof(line), "obj %s pending 0 ", kind_word(v->intent_kind));
        put(&w, line, strlen(line));
        put(&w, v->intent_addr, strlen(v->intent_addr));
        put(&w, "\n", 1);
    }
    estc_buf_free(&text);
    if (w.failed) {
        writer_free(&w);
        return ESTC_ERR_NOMEM;
    }
    out->data = w.data; /* w.cap >= w.len; freed with estc_buf_free */
    out->len = w.len;
    return ESTC_OK;
}

/* Whether objects at @addr vanish with the process, so that the state must
 * carry them (the driver says so, not the scheme's name). */
static bool is_volatile(estc_client *c, const char *addr)
{
    return addr != NULL && (estc_engine_caps(c->ctx, addr) & ESTC_CAP_VOLATILE) != 0;
}

/* Whether the state may carry the private key at @addr. */
static bool key_exportable(estc_client *c, const char *addr)
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

static estc_err encode(estc_client *c, const struct view *v, estc_buf *out)
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
        err = estc_cert_load(c->ctx, v->cert, &cert);
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
    if (v->mode == VIEW_NOW && (der->len == 0 || estc__cert_view_parse(der, &cv) == ESTC_OK))
        deadline = estc__deadline(c, &cv, estc_client_now(c));
    put_i64(&body, T_DEADLINE, deadline);
    put_rec(&body, T_LIFECYCLE, lc.data, lc.len);

    /* mem: keys: the committed ones recorded, and the enrolled one. */
    for (size_t i = 0; err == ESTC_OK && i < estc_lifecycle_count(c->lc); i++) {
        const char *a;
        estc_obj_kind k;
        estc_obj_state st;
        if (estc_lifecycle_get(c->lc, i, &a, &k, &st, NULL) != ESTC_OK || k != ESTC_OBJ_KEY ||
            !key_exportable(c, a))
            continue;
        if (st == ESTC_OBJ_COMMITTED || (v->mode == VIEW_COMMIT && st == ESTC_OBJ_PENDING))
            err = put_mem_key(c, &body, a, &done, &n_done);
    }
    if (err == ESTC_OK && key_exportable(c, v->key))
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

static void view_now(estc_client *c, struct view *v)
{
    *v = (struct view){.mode = VIEW_NOW,
                       .cert = c->cert_addr,
                       .key = c->key_addr,
                       .ca_addrs = c->ca_addrs,
                       .cas = &c->explicit_certs,
                       .n_cas = c->n_ca_addrs};
}

static estc_err write_view(estc_client *c, const struct view *v, const estc_state_stream *s)
{
    estc_buf data = {0};
    estc_err err = encode(c, v, &data);
    if (err == ESTC_OK) {
        err = s->write(s->arg, data.data, data.len);
        if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "state: the stream refused the write (%s)",
                             estc_err_name(err));
    }
    estc_buf_free(&data);
    return err;
}

/* ---- persist ------------------------------------------------------------------ */

bool estc_client_is_ready_for_persistence(const estc_client *c)
{
    if (c == NULL || c->busy > 0)
        return false;
    for (size_t i = 0; i < estc_lifecycle_count(c->lc); i++) {
        estc_obj_state st;
        if (estc_lifecycle_get(c->lc, i, NULL, NULL, &st, NULL) == ESTC_OK &&
            st != ESTC_OBJ_COMMITTED)
            return false;
    }
    return true;
}

estc_err estc_client_persist(estc_client *c, const estc_state_stream *s)
{
    if (c == NULL || s == NULL || s->write == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (!estc_client_is_ready_for_persistence(c))
        return estc_error(c->ctx, ESTC_ERR_STATE, "persist: an operation is in flight");
    struct view v;
    view_now(c, &v);
    return write_view(c, &v, s);
}

estc_err estc_client_set_journal(estc_client *c, const estc_state_stream *s)
{
    if (c == NULL || (s != NULL && s->write == NULL))
        return ESTC_ERR_INVALID_ARG;
    c->have_journal = s != NULL;
    c->journal = s != NULL ? *s : (estc_state_stream){0};
    return ESTC_OK;
}

estc_err estc__journal_intent(estc_client *c, const char *addr, estc_obj_kind kind,
                              const estc_buf *cert_der)
{
    if (!c->have_journal)
        return ESTC_OK;
    struct view v;
    view_now(c, &v);
    v.cert_der = cert_der;
    v.mode = VIEW_INTENT;
    v.intent_addr = addr;
    v.intent_kind = kind;
    return write_view(c, &v, &c->journal);
}

estc_err estc__journal_commit(estc_client *c, const char *cert, const estc_buf *cert_der,
                              const char *key, char *const *ca_addrs, const estc__der_list *cas)
{
    if (!c->have_journal)
        return ESTC_OK;
    struct view v;
    view_now(c, &v);
    v.mode = VIEW_COMMIT;
    v.cert_der = cert_der;
    if (cert != NULL)
        v.cert = cert;
    if (key != NULL)
        v.key = key;
    if (cas != NULL) {
        v.ca_addrs = ca_addrs;
        v.cas = cas;
        v.n_cas = cas->n;
    }
    return write_view(c, &v, &c->journal);
}

void estc__journal_done(estc_client *c)
{
    if (!c->have_journal || !estc_client_is_ready_for_persistence(c))
        return;
    struct view v;
    view_now(c, &v);
    if (write_view(c, &v, &c->journal) != ESTC_OK)
        estc_log(c->ctx, ESTC_LOG_WARNING, "journal: the final state was not written");
}

/* ---- reading ------------------------------------------------------------------- */

struct pair {
    char *addr;
    estc_buf data;
};

struct parsed {
    char *key_addr, *cert_addr, *key_base, *cert_base, *ca_prefix;
    estc_buf cert;
    struct pair *cas;
    size_t n_cas;
    struct pair *keys;
    size_t n_keys;
    bool have_explicit;
    int64_t provisioned, retry_at;
    bool have_hash;
    uint8_t hash[HASH_LEN];
    uint32_t failures;
    uint8_t flags;
    estc_buf lifecycle;
    bool seen[T_TAG_END];
};

static void pairs_free(struct pair *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p[i].addr);
        estc_buf_free(&p[i].data);
    }
    free(p);
}

static void parsed_free(struct parsed *p)
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

static estc_err get_pair(const uint8_t *v, size_t n, struct pair **list, size_t *count)
{
    if (n < 2)
        return ESTC_ERR_FORMAT;
    size_t al = (size_t)v[0] << 8 | v[1];
    if (al > n - 2 || n - 2 - al == 0)
        return ESTC_ERR_FORMAT;
    struct pair p = {0};
    estc_err err = get_addr(v + 2, al, &p.addr);
    if (err == ESTC_OK)
        err = estc_buf_set(&p.data, v + 2 + al, n - 2 - al);
    struct pair *grown = NULL;
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

static estc_err decode_record(struct parsed *p, unsigned tag, const uint8_t *v, size_t n)
{
    bool repeatable = tag == T_CA || tag == T_MEM_KEY;
    if (tag == 0 || tag >= T_TAG_END || (p->seen[tag] && !repeatable))
        return ESTC_ERR_FORMAT;
    p->seen[tag] = true;
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
        p->flags = v[0];
        return ESTC_OK;
    case T_LIFECYCLE:
        return estc_buf_set(&p->lifecycle, v, n);
    case T_TAG_END:
        break;
    }
    return ESTC_ERR_FORMAT;
}

/* Checks the frame and the digest, then decodes every record. */
static estc_err decode(const uint8_t *d, size_t len, struct parsed *p)
{
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
        estc_err err = decode_record(p, tag, b, n);
        if (err != ESTC_OK)
            return err;
        b += n;
    }
    /* The fields every state has. */
    if (!p->seen[T_KEY_ADDR] || !p->seen[T_CERT_ADDR] || !p->seen[T_LIFECYCLE] ||
        !p->seen[T_PROVISIONED] || !p->seen[T_FLAGS])
        return ESTC_ERR_FORMAT;
    return ESTC_OK;
}

/* ---- restore ----------------------------------------------------------------- */

/* The mem: objects re-created by one restore, for undoing it. */
struct made {
    const char *addr;
    estc_obj_kind kind;
};

static estc_err recreate(estc_client *c, const struct parsed *p, struct made *made, size_t *n)
{
    estc_err err = ESTC_OK;
    bool there = false;
    for (size_t i = 0; err == ESTC_OK && i < p->n_keys; i++) {
        if (!key_exportable(c, p->keys[i].addr))
            return ESTC_ERR_FORMAT;
        err = estc_object_exists(c->ctx, p->keys[i].addr, ESTC_OBJ_KEY, &there);
        if (err == ESTC_OK && !there) {
            err =
                estc_key_import(c->ctx, p->keys[i].addr, p->keys[i].data.data, p->keys[i].data.len);
            if (err == ESTC_OK)
                made[(*n)++] = (struct made){p->keys[i].addr, ESTC_OBJ_KEY};
        }
    }
    if (err == ESTC_OK && is_volatile(c, p->cert_addr) && p->cert.len > 0) {
        err = estc_object_exists(c->ctx, p->cert_addr, ESTC_OBJ_CERT, &there);
        if (err == ESTC_OK && !there) {
            err = estc_cert_store(c->ctx, p->cert_addr, p->cert.data, p->cert.len);
            if (err == ESTC_OK)
                made[(*n)++] = (struct made){p->cert_addr, ESTC_OBJ_CERT};
        }
    }
    for (size_t i = 0; err == ESTC_OK && i < p->n_cas; i++) {
        if (!is_volatile(c, p->cas[i].addr))
            continue;
        err = estc_object_exists(c->ctx, p->cas[i].addr, ESTC_OBJ_TRUST, &there);
        if (err == ESTC_OK && !there) {
            err = estc_trust_store(c->ctx, p->cas[i].addr, p->cas[i].data.data, p->cas[i].data.len);
            if (err == ESTC_OK)
                made[(*n)++] = (struct made){p->cas[i].addr, ESTC_OBJ_TRUST};
        }
    }
    return err;
}

static void swap_str(char **slot, char **value)
{
    if (*value == NULL)
        return;
    free(*slot);
    *slot = *value;
    *value = NULL;
}

/* Purges what a crash left: pending objects (rolled back), superseded ones
 * (the commit that was under way). */
static bool purge(estc_client *c)
{
    bool pending = false, superseded = false;
    for (size_t i = 0; i < estc_lifecycle_count(c->lc); i++) {
        estc_obj_state st;
        if (estc_lifecycle_get(c->lc, i, NULL, NULL, &st, NULL) != ESTC_OK)
            continue;
        pending = pending || st == ESTC_OBJ_PENDING;
        superseded = superseded || st == ESTC_OBJ_SUPERSEDED;
    }
    estc_err err = ESTC_OK;
    if (pending) {
        estc_log(c->ctx, ESTC_LOG_INFO, "restore: removing objects of an interrupted operation");
        err = estc_lifecycle_rollback(c->lc);
    } else if (superseded) {
        estc_log(c->ctx, ESTC_LOG_INFO, "restore: finishing an interrupted commit");
        err = estc_lifecycle_commit(c->lc);
    }
    if (err != ESTC_OK)
        estc_log(c->ctx, ESTC_LOG_WARNING, "restore: purge incomplete (%s); retried later",
                 estc_err_name(err));
    return pending || superseded;
}

estc_err estc_client_restore(estc_client *c, const estc_state_stream *s)
{
    return estc_client_restore_ex(c, s, 0);
}

estc_err estc_client_restore_ex(estc_client *c, const estc_state_stream *s, unsigned flags)
{
    if (c == NULL || s == NULL || s->read == NULL || (flags & ~ESTC_RESTORE_READ_ONLY) != 0)
        return ESTC_ERR_INVALID_ARG;
    if (c->busy > 0)
        return estc_error(c->ctx, ESTC_ERR_STATE, "restore: an operation is in flight");
    estc_buf data = {0};
    estc_err err = s->read(s->arg, &data);
    if (err == ESTC_ERR_NOT_FOUND)
        return estc_error(c->ctx, err, "restore: no stored state");
    if (err != ESTC_OK)
        return estc_error(c->ctx, err, "restore: the stream cannot be read");

    struct parsed p = {0};
    estc_lifecycle *probe = NULL;
    estc__der_list cas = {0};
    char **ca_addrs = NULL;
    struct made *made = NULL;
    size_t n_made = 0;
    err = decode(data.data, data.len, &p);
    estc_buf_free(&data);
    if (err == ESTC_ERR_FORMAT)
        err = estc_error(c->ctx, err,
                         "restore: the state is corrupt, truncated or of another "
                         "version");
    /* Check the lifecycle record on a scratch copy first. */
    if (err == ESTC_OK)
        err = estc_lifecycle_new(c->ctx, &probe);
    if (err == ESTC_OK) {
        err = estc_lifecycle_deserialize(probe, p.lifecycle.data, p.lifecycle.len);
        if (err == ESTC_ERR_FORMAT)
            err = estc_error(c->ctx, err, "restore: malformed lifecycle record");
    }
    if (err == ESTC_OK && p.n_cas > 0) {
        ca_addrs = calloc(p.n_cas, sizeof(*ca_addrs));
        err = ca_addrs == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    }
    for (size_t i = 0; err == ESTC_OK && i < p.n_cas; i++) {
        ca_addrs[i] = p.cas[i].addr;
        err = estc__der_list_add(&cas, p.cas[i].data.data, p.cas[i].data.len);
    }
    if (err == ESTC_OK) {
        made = calloc(p.n_keys + p.n_cas + 1, sizeof(*made));
        err = made == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    }
    if (err == ESTC_OK)
        err = recreate(c, &p, made, &n_made);
    /* From here on nothing can fail: the record is known to parse. */
    if (err == ESTC_OK)
        err = estc_lifecycle_deserialize(c->lc, p.lifecycle.data, p.lifecycle.len);
    if (err != ESTC_OK) {
        for (size_t i = n_made; i > 0; i--)
            estc_object_remove(c->ctx, made[i - 1].addr, made[i - 1].kind);
        free(made);
        free(ca_addrs);
        estc__der_list_free(&cas);
        estc_lifecycle_free(probe);
        parsed_free(&p);
        return err;
    }
    free(made);
    estc_lifecycle_free(probe);

    swap_str(&c->key_addr, &p.key_addr);
    swap_str(&c->cert_addr, &p.cert_addr);
    swap_str(&c->key_base, &p.key_base);
    swap_str(&c->cert_base, &p.cert_base);
    swap_str(&c->ca_prefix, &p.ca_prefix);
    for (size_t i = 0; i < c->n_ca_addrs; i++)
        free(c->ca_addrs[i]);
    free(c->ca_addrs);
    c->ca_addrs = ca_addrs;
    c->n_ca_addrs = p.n_cas;
    for (size_t i = 0; i < p.n_cas; i++)
        p.cas[i].addr = NULL; /* now owned by c->ca_addrs */
    estc__der_list_free(&c->explicit_certs);
    c->explicit_certs = cas;
    c->have_explicit = p.have_explicit;
    estc__provisioned_restore(c, p.have_hash ? p.hash : NULL, p.provisioned);
    c->retry_at = p.retry_at;
    c->failures = p.failures;
    c->fallback = (p.flags & FLAG_FALLBACK) != 0;
    c->crts_due = (p.flags & FLAG_CRTS_DUE) != 0;
    parsed_free(&p);
    estc__client_reset_transport(c);

    if ((flags & ESTC_RESTORE_READ_ONLY) == 0 && purge(c) && s->write != NULL) {
        /* Store the purged state, so the next start does not redo it. */
        struct view v;
        view_now(c, &v);
        if (estc_client_is_ready_for_persistence(c) && write_view(c, &v, s) != ESTC_OK)
            estc_log(c->ctx, ESTC_LOG_WARNING, "restore: the purged state was not written back");
    }
    estc_log(c->ctx, ESTC_LOG_INFO, "restore: certificate at %s, key at %s, %zu CA certificate(s)",
             c->cert_addr, c->key_addr, c->n_ca_addrs);
    return ESTC_OK;
}

/* ---- cleanup --------------------------------------------------------------- */

estc_err estc_client_cleanup(estc_client *c)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (c->busy > 0)
        return estc_error(c->ctx, ESTC_ERR_STATE, "cleanup: an operation is in flight");
    bool changed = estc_lifecycle_changed(c->lc);
    estc_err err = estc_lifecycle_cleanup(c->lc);
    if (changed && estc_lifecycle_count(c->lc) == 0) {
        /* Everything went: so do the references to it. */
        estc__der_list_free(&c->explicit_certs);
        for (size_t i = 0; i < c->n_ca_addrs; i++)
            free(c->ca_addrs[i]);
        free(c->ca_addrs);
        c->ca_addrs = NULL;
        c->n_ca_addrs = 0;
        c->have_explicit = false;
        estc__provisioned_forget(c);
        estc__client_reset_transport(c);
    }
    return err;
}
