/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-client bookkeeping: the delay-mode counters and the answers kept for
 * retransmitted enrollment requests. libcoap 4.3.1 hands a retransmitted CON
 * POST to the handler again, so both must recognise a repeat.
 */
#include "server.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define CACHE_MAX_ENTRIES 1024
#define DELAY_MAX_CLIENTS 4096

struct delay_entry {
    uint8_t id[32];
    int count;
    coap_session_t *last_session; /* compared, never dereferenced */
    coap_mid_t last_mid;
    struct delay_entry *next;
};

struct answer_entry {
    uint8_t key[32];
    time_t when;
    uint8_t *cert; /* DER */
    size_t cert_len;
    uint8_t *pkey; /* PKCS#8 DER of a server-generated key, or NULL */
    size_t pkey_len;
    struct answer_entry *next;
};

static void answer_free(struct answer_entry *a)
{
    free(a->cert);
    if (a->pkey != NULL)
        OPENSSL_cleanse(a->pkey, a->pkey_len); /* a generated private key */
    free(a->pkey);
    free(a);
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d != NULL && n > 0)
        memcpy(d, p, n);
    return d;
}

/* Shared by all workers: every call holds `lock`. */
struct srv_cache {
    pthread_mutex_t lock;
    struct delay_entry *delays; /* newest first */
    size_t n_delays;
    struct answer_entry *answers;
    size_t n_answers;
};

struct srv_cache *srv_cache_new(void)
{
    struct srv_cache *c = calloc(1, sizeof(struct srv_cache));
    if (c != NULL && pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

void srv_cache_free(struct srv_cache *c)
{
    if (c == NULL)
        return;
    while (c->delays != NULL) {
        struct delay_entry *d = c->delays;
        c->delays = d->next;
        free(d);
    }
    while (c->answers != NULL) {
        struct answer_entry *a = c->answers;
        c->answers = a->next;
        answer_free(a);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static int should_delay(struct srv_cache *c, const uint8_t id[32], coap_session_t *session,
                        coap_mid_t mid, int delay_first)
{
    struct delay_entry *d;

    for (d = c->delays; d != NULL; d = d->next) {
        if (memcmp(d->id, id, 32) == 0)
            break;
    }
    if (d == NULL) {
        d = calloc(1, sizeof(*d));
        if (d == NULL)
            return 1; /* out of memory: "try later" is the safe answer */
        memcpy(d->id, id, 32);
        d->last_mid = -1;
        d->next = c->delays;
        c->delays = d;
        if (++c->n_delays > DELAY_MAX_CLIENTS) {
            /* Forget the oldest client: it will be delayed again, which is harmless. */
            struct delay_entry *q = c->delays;
            while (q->next != NULL && q->next->next != NULL)
                q = q->next;
            free(q->next);
            q->next = NULL;
            c->n_delays--;
        }
    }
    /* A retransmission of the request just delayed is delayed again, uncounted. */
    if (d->last_session == session && d->last_mid == mid)
        return d->count <= delay_first;
    d->last_session = session;
    d->last_mid = mid;
    d->count++;
    return d->count <= delay_first;
}

static void expire(struct srv_cache *c, long window)
{
    struct answer_entry **pp = &c->answers;
    time_t now = time(NULL);
    size_t pos = 0;

    while (*pp != NULL) {
        struct answer_entry *a = *pp;
        if (now - a->when > window || pos >= CACHE_MAX_ENTRIES) {
            *pp = a->next;
            answer_free(a);
            c->n_answers--;
        } else {
            pp = &a->next;
            pos++;
        }
    }
}

static int lookup(struct srv_cache *c, const uint8_t key[32], long window, struct srv_answer *out)
{
    struct answer_entry *a;

    memset(out, 0, sizeof(*out));
    expire(c, window);
    for (a = c->answers; a != NULL; a = a->next) {
        if (memcmp(a->key, key, 32) != 0)
            continue;
        out->cert = dup_bytes(a->cert, a->cert_len);
        out->cert_len = a->cert_len;
        if (a->pkey != NULL) {
            out->pkey = dup_bytes(a->pkey, a->pkey_len);
            out->pkey_len = a->pkey_len;
        }
        if (out->cert == NULL || (a->pkey != NULL && out->pkey == NULL)) {
            srv_answer_clear(out);
            return 0;
        }
        return 1;
    }
    return 0;
}

void srv_answer_clear(struct srv_answer *a)
{
    free(a->cert);
    if (a->pkey != NULL)
        OPENSSL_cleanse(a->pkey, a->pkey_len);
    free(a->pkey);
    memset(a, 0, sizeof(*a));
}

static int store(struct srv_cache *c, const uint8_t key[32], const struct srv_answer *ans)
{
    struct answer_entry *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return -1;
    a->cert = dup_bytes(ans->cert, ans->cert_len);
    a->cert_len = ans->cert_len;
    if (ans->pkey != NULL) {
        a->pkey = dup_bytes(ans->pkey, ans->pkey_len);
        a->pkey_len = ans->pkey_len;
    }
    if (a->cert == NULL || (ans->pkey != NULL && a->pkey == NULL)) {
        answer_free(a);
        return -1;
    }
    memcpy(a->key, key, 32);
    a->when = time(NULL);
    /* Newest first: expire() trims the old end. */
    a->next = c->answers;
    c->answers = a;
    c->n_answers++;
    return 0;
}

int srv_cache_should_delay(struct srv_cache *c, const uint8_t id[32], coap_session_t *session,
                           coap_mid_t mid, int delay_first)
{
    int r;
    if (delay_first <= 0)
        return 0;
    pthread_mutex_lock(&c->lock);
    r = should_delay(c, id, session, mid, delay_first);
    pthread_mutex_unlock(&c->lock);
    return r;
}

int srv_cache_lookup(struct srv_cache *c, const uint8_t key[32], long window,
                     struct srv_answer *out)
{
    int r;
    pthread_mutex_lock(&c->lock);
    r = lookup(c, key, window, out);
    pthread_mutex_unlock(&c->lock);
    return r;
}

int srv_cache_store(struct srv_cache *c, const uint8_t key[32], const struct srv_answer *ans)
{
    int r;
    pthread_mutex_lock(&c->lock);
    r = store(c, key, ans);
    pthread_mutex_unlock(&c->lock);
    return r;
}
