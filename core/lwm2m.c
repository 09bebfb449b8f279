/* SPDX-License-Identifier: Apache-2.0 */
/*
 * LwM2M integration: Security Mode 4 accounts get their credentials from
 * EST; the accounts and the EST state are persisted in one record.
 *
 * Record: "ESTCLW01", n accounts (u8), each {instance u16, ssid u16,
 * bootstrap u8, mode u8, uri length u16, uri}, the client's state (u32
 * length + bytes, itself versioned and hashed), SHA-256 of all before it.
 */
#include <estc/lwm2m.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define REC_MAGIC "ESTCLW01"
#define REC_MAGIC_LEN 8
#define HASH_LEN 32

struct account {
    uint16_t instance, ssid;
    bool bootstrap;
    int mode;
    char *uri;
};

struct estc_lwm2m {
    estc_client *client;
    estc_lwm2m_config cfg;
    char *bs_cert, *bs_key, *bs_trust;
    struct account acc[ESTC_LWM2M_MAX_ACCOUNTS];
    size_t n_acc;
    estc_state_stream inner; /* what the client writes through */
    const char **trust;      /* answer of connection_opening */
    size_t n_trust;
};

static void accounts_clear(struct account *a, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free(a[i].uri);
    memset(a, 0, sizeof(*a) * *n);
    *n = 0;
}

static char *dup_or_null(const char *s, bool *fail)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *fail = true;
    return d;
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static unsigned get16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static bool sha256(const uint8_t *d, size_t n, uint8_t out[HASH_LEN])
{
    unsigned len = 0;
    return EVP_Digest(d, n, out, &len, EVP_sha256(), NULL) == 1 && len == HASH_LEN;
}

/* The client's state @data wrapped with the accounts, to the user's stream. */
static estc_err inner_write(void *arg, const uint8_t *data, size_t len)
{
    estc_lwm2m *lw = arg;
    size_t need = REC_MAGIC_LEN + 1 + 4 + len + HASH_LEN;
    for (size_t i = 0; i < lw->n_acc; i++)
        need += 8 + (lw->acc[i].uri != NULL ? strlen(lw->acc[i].uri) : 0);
    if (len > UINT32_MAX)
        return ESTC_ERR_LIMIT;
    uint8_t *rec = malloc(need);
    if (rec == NULL)
        return ESTC_ERR_NOMEM;
    uint8_t *p = rec;
    memcpy(p, REC_MAGIC, REC_MAGIC_LEN);
    p += REC_MAGIC_LEN;
    *p++ = (uint8_t)lw->n_acc;
    for (size_t i = 0; i < lw->n_acc; i++) {
        const struct account *a = &lw->acc[i];
        size_t ul = a->uri != NULL ? strlen(a->uri) : 0;
        put16(p, a->instance);
        put16(p + 2, a->ssid);
        p[4] = a->bootstrap;
        p[5] = (uint8_t)a->mode;
        put16(p + 6, (unsigned)ul);
        p += 8;
        if (ul > 0)
            memcpy(p, a->uri, ul);
        p += ul;
    }
    p[0] = (uint8_t)(len >> 24);
    p[1] = (uint8_t)(len >> 16);
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    p += 4;
    if (len > 0)
        memcpy(p, data, len);
    p += len;
    estc_err err = ESTC_ERR_CRYPTO;
    if (sha256(rec, (size_t)(p - rec), p))
        err = lw->cfg.stream.write(lw->cfg.stream.arg, rec, need);
    free(rec);
    return err;
}

/* Parse a record: accounts into @acc, the client's state into @state. */
static estc_err parse_record(const uint8_t *d, size_t n, struct account *acc, size_t *n_acc,
                             estc_buf *state)
{
    uint8_t h[HASH_LEN];
    if (n < REC_MAGIC_LEN + 1 + 4 + HASH_LEN || memcmp(d, REC_MAGIC, REC_MAGIC_LEN) != 0)
        return ESTC_ERR_FORMAT;
    if (!sha256(d, n - HASH_LEN, h))
        return ESTC_ERR_CRYPTO;
    if (memcmp(h, d + n - HASH_LEN, HASH_LEN) != 0)
        return ESTC_ERR_FORMAT;
    const uint8_t *p = d + REC_MAGIC_LEN, *end = d + n - HASH_LEN;
    size_t count = *p++;
    if (count > ESTC_LWM2M_MAX_ACCOUNTS)
        return ESTC_ERR_FORMAT;
    estc_err err = ESTC_OK;
    for (size_t i = 0; i < count; i++) {
        if (end - p < 8) {
            err = ESTC_ERR_FORMAT;
            break;
        }
        struct account *a = &acc[*n_acc];
        size_t ul = get16(p + 6);
        a->instance = (uint16_t)get16(p);
        a->ssid = (uint16_t)get16(p + 2);
        a->bootstrap = p[4] != 0;
        a->mode = p[5];
        p += 8;
        if ((size_t)(end - p) < ul || ul > ESTC_LWM2M_MAX_URI) {
            err = ESTC_ERR_FORMAT;
            break;
        }
        if (ul > 0) {
            a->uri = malloc(ul + 1);
            if (a->uri == NULL) {
                err = ESTC_ERR_NOMEM;
                break;
            }
            memcpy(a->uri, p, ul);
            a->uri[ul] = '\0';
            p += ul;
        }
        (*n_acc)++;
    }
    if (err == ESTC_OK) {
        if (end - p < 4)
            return ESTC_ERR_FORMAT;
        size_t sl = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        p += 4;
        if ((size_t)(end - p) != sl)
            return ESTC_ERR_FORMAT;
        err = estc_buf_set(state, p, sl);
    }
    return err;
}

/* The client reads its state out of the record; the accounts are parsed by
 * estc_lwm2m_restore() itself before. */
static estc_err inner_read(void *arg, estc_buf *out)
{
    estc_lwm2m *lw = arg;
    estc_buf rec = {0};
    struct account tmp[ESTC_LWM2M_MAX_ACCOUNTS] = {0};
    size_t n = 0;
    estc_err err = lw->cfg.stream.read(lw->cfg.stream.arg, &rec);
    if (err == ESTC_OK)
        err = parse_record(rec.data, rec.len, tmp, &n, out);
    accounts_clear(tmp, &n);
    estc_buf_free(&rec);
    return err;
}

/* EST_AND_BOOTSTRAP: the addresses are read from the client when a
 * connection opens, so nothing to export; GLOBAL goes to the application. */
static estc_err export_cb(void *arg, bool global, const estc_buf *certs, size_t n)
{
    estc_lwm2m *lw = arg;
    if (global && lw->cfg.global_export != NULL)
        return lw->cfg.global_export(lw->cfg.global_export_arg, global, certs, n);
    return ESTC_OK;
}

estc_err estc_lwm2m_new(estc_client *client, const estc_lwm2m_config *cfg, estc_lwm2m **out)
{
    if (client == NULL || cfg == NULL || out == NULL || cfg->stream.write == NULL ||
        cfg->stream.read == NULL ||
        (cfg->cacerts_policy == ESTC_CACERTS_GLOBAL && cfg->global_export == NULL))
        return ESTC_ERR_INVALID_ARG;
    estc_lwm2m *lw = calloc(1, sizeof(*lw));
    if (lw == NULL)
        return ESTC_ERR_NOMEM;
    bool fail = false;
    lw->client = client;
    lw->cfg = *cfg;
    lw->bs_cert = dup_or_null(cfg->bootstrap_cert, &fail);
    lw->bs_key = dup_or_null(cfg->bootstrap_key, &fail);
    lw->bs_trust = dup_or_null(cfg->bootstrap_trust, &fail);
    lw->inner.write = inner_write;
    lw->inner.read = inner_read;
    lw->inner.arg = lw;
    if (fail) {
        estc_lwm2m_free(lw);
        return ESTC_ERR_NOMEM;
    }
    bool needs_fn = cfg->cacerts_policy == ESTC_CACERTS_EST_AND_BOOTSTRAP ||
                    cfg->cacerts_policy == ESTC_CACERTS_GLOBAL;
    estc_err err = estc_client_set_cacerts_policy(client, cfg->cacerts_policy,
                                                  needs_fn ? export_cb : NULL, lw);
    if (err == ESTC_OK)
        err = estc_client_set_journal(client, &lw->inner);
    if (err != ESTC_OK) {
        estc_lwm2m_free(lw);
        return err;
    }
    *out = lw;
    return ESTC_OK;
}

void estc_lwm2m_free(estc_lwm2m *lw)
{
    if (lw == NULL)
        return;
    /* The client must not write through a freed handle. */
    if (lw->client != NULL)
        estc_client_set_journal(lw->client, NULL);
    accounts_clear(lw->acc, &lw->n_acc);
    free(lw->bs_cert);
    free(lw->bs_key);
    free(lw->bs_trust);
    free(lw->trust);
    free(lw);
}

estc_err estc_lwm2m_restore(estc_lwm2m *lw)
{
    if (lw == NULL)
        return ESTC_ERR_INVALID_ARG;
    estc_buf rec = {0}, state = {0};
    struct account tmp[ESTC_LWM2M_MAX_ACCOUNTS] = {0};
    size_t n = 0;
    estc_err err = lw->cfg.stream.read(lw->cfg.stream.arg, &rec);
    if (err == ESTC_OK)
        err = parse_record(rec.data, rec.len, tmp, &n, &state);
    estc_buf_free(&rec);
    estc_buf_free(&state);
    if (err != ESTC_OK) {
        accounts_clear(tmp, &n);
        return err;
    }
    /* The accounts go in first: a purge in the client's restore writes the
     * record back through inner_write(). */
    struct account old[ESTC_LWM2M_MAX_ACCOUNTS];
    size_t n_old = lw->n_acc;
    memcpy(old, lw->acc, sizeof(old));
    memcpy(lw->acc, tmp, sizeof(tmp));
    lw->n_acc = n;
    err = estc_client_restore(lw->client, &lw->inner);
    if (err != ESTC_OK) {
        accounts_clear(lw->acc, &lw->n_acc);
        memcpy(lw->acc, old, sizeof(old));
        lw->n_acc = n_old;
        return err;
    }
    accounts_clear(old, &n_old);
    return ESTC_OK;
}

bool estc_lwm2m_uses_est(const estc_lwm2m *lw)
{
    if (lw == NULL)
        return false;
    for (size_t i = 0; i < lw->n_acc; i++)
        if (lw->acc[i].mode == ESTC_LWM2M_MODE_CERT_EST)
            return true;
    return false;
}

static bool enrolled(estc_lwm2m *lw)
{
    estc_buf der = {0};
    bool have = estc_client_certificate(lw->client, &der) == ESTC_OK;
    estc_buf_free(&der);
    return have;
}

/* /crts (when the policy wants it) and /sen, as the schedule orders them. */
static estc_err enroll_now(estc_lwm2m *lw)
{
    for (int step = 0; step < 3 && !enrolled(lw); step++) {
        estc_tick_result what;
        estc_err err = estc_client_tick(lw->client, &what);
        if (err != ESTC_OK)
            return err;
        if (what == ESTC_TICK_NOTHING)
            break; /* a retry is scheduled later */
    }
    return enrolled(lw) ? ESTC_OK : ESTC_ERR_STATE;
}

estc_err estc_lwm2m_bootstrap_finished(estc_lwm2m *lw, const estc_lwm2m_account *accounts, size_t n)
{
    if (lw == NULL || (accounts == NULL && n > 0) || n > ESTC_LWM2M_MAX_ACCOUNTS)
        return ESTC_ERR_INVALID_ARG;
    for (size_t i = 0; i < n; i++) {
        if (accounts[i].server_uri != NULL && strlen(accounts[i].server_uri) > ESTC_LWM2M_MAX_URI)
            return ESTC_ERR_INVALID_ARG;
        if (accounts[i].security_mode < 0 || accounts[i].security_mode > 255)
            return ESTC_ERR_INVALID_ARG;
        for (size_t j = 0; j < i; j++)
            if (accounts[j].instance == accounts[i].instance)
                return ESTC_ERR_INVALID_ARG;
    }
    struct account tmp[ESTC_LWM2M_MAX_ACCOUNTS] = {0};
    size_t nt = 0;
    bool fail = false;
    for (size_t i = 0; i < n; i++) {
        tmp[i].instance = accounts[i].instance;
        tmp[i].ssid = accounts[i].short_server_id;
        tmp[i].bootstrap = accounts[i].bootstrap;
        tmp[i].mode = accounts[i].security_mode;
        tmp[i].uri = dup_or_null(accounts[i].server_uri, &fail);
        nt++;
    }
    if (fail) {
        accounts_clear(tmp, &nt);
        return ESTC_ERR_NOMEM;
    }
    accounts_clear(lw->acc, &lw->n_acc);
    memcpy(lw->acc, tmp, sizeof(tmp));
    lw->n_acc = nt;

    estc_err est_err = ESTC_OK;
    if (estc_lwm2m_uses_est(lw) && !enrolled(lw))
        est_err = enroll_now(lw);
    /* The accounts are stored whatever EST did, with the state it left. */
    estc_err err = estc_client_persist(lw->client, &lw->inner);
    return est_err != ESTC_OK ? est_err : err;
}

static const struct account *find(const estc_lwm2m *lw, uint16_t instance)
{
    for (size_t i = 0; i < lw->n_acc; i++)
        if (lw->acc[i].instance == instance)
            return &lw->acc[i];
    return NULL;
}

/* The /crts set as the trust store; false when there is none. */
static estc_err use_est_trust(estc_lwm2m *lw, estc_lwm2m_credentials *out)
{
    size_t n = estc_client_ca_count(lw->client);
    if (n == 0)
        return ESTC_OK;
    const char **t = calloc(n, sizeof(*t));
    if (t == NULL)
        return ESTC_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        t[i] = estc_client_ca_address(lw->client, i);
    free(lw->trust);
    lw->trust = t;
    out->trust = t;
    out->n_trust = n;
    return ESTC_OK;
}

estc_err estc_lwm2m_connection_opening(estc_lwm2m *lw, uint16_t instance,
                                       estc_lwm2m_credentials *out)
{
    if (lw == NULL || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    memset(out, 0, sizeof(*out));
    const struct account *a = find(lw, instance);
    if (a == NULL)
        return ESTC_ERR_NOT_FOUND;
    estc_cacerts_policy pol = lw->cfg.cacerts_policy;
    bool est_mode = a->mode == ESTC_LWM2M_MODE_CERT_EST;

    if (est_mode && !enrolled(lw)) {
        estc_err err = enroll_now(lw);
        estc_err perr = estc_client_persist(lw->client, &lw->inner);
        if (err == ESTC_OK && !enrolled(lw))
            err = ESTC_ERR_STATE;
        if (err != ESTC_OK && !a->bootstrap)
            return err;
        (void)perr;
    }
    if (est_mode && enrolled(lw)) {
        out->est = true;
        out->cert = estc_client_cert_address(lw->client);
        out->key = estc_client_key_address(lw->client);
    } else if (a->bootstrap) {
        out->cert = lw->bs_cert;
        out->key = lw->bs_key;
    }

    /* The trust store: the EST server's own connection (the bootstrap
     * endpoint in EST mode, and mode-4 accounts, whose server certificates
     * are issued under the EST CA) use /crts unless the policy is NEVER;
     * the bootstrap connection under EST_AND_BOOTSTRAP and GLOBAL; every
     * connection under GLOBAL. */
    bool use_crts;
    if (pol == ESTC_CACERTS_NEVER)
        use_crts = false;
    else if (pol == ESTC_CACERTS_GLOBAL)
        use_crts = true;
    else if (a->bootstrap)
        use_crts = est_mode || pol == ESTC_CACERTS_EST_AND_BOOTSTRAP;
    else
        use_crts = est_mode;
    if (use_crts) {
        estc_err err = use_est_trust(lw, out);
        if (err != ESTC_OK)
            return err;
    }
    if (out->n_trust == 0 && (a->bootstrap || est_mode))
        out->trust_file = lw->bs_trust;
    return ESTC_OK;
}

estc_err estc_lwm2m_tick(estc_lwm2m *lw, estc_tick_result *what)
{
    if (lw == NULL || what == NULL)
        return ESTC_ERR_INVALID_ARG;
    *what = ESTC_TICK_NOTHING;
    if (!estc_lwm2m_uses_est(lw))
        return ESTC_OK;
    estc_err err = estc_client_tick(lw->client, what);
    if (*what != ESTC_TICK_NOTHING) {
        estc_err perr = estc_client_persist(lw->client, &lw->inner);
        if (err == ESTC_OK)
            err = perr;
    }
    return err;
}

estc_err estc_lwm2m_next_deadline(estc_lwm2m *lw, int64_t *when)
{
    if (lw == NULL || when == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (!estc_lwm2m_uses_est(lw)) {
        *when = ESTC_NEVER;
        return ESTC_OK;
    }
    return estc_client_next_deadline(lw->client, when);
}

size_t estc_lwm2m_account_count(const estc_lwm2m *lw)
{
    return lw != NULL ? lw->n_acc : 0;
}

estc_err estc_lwm2m_account_get(const estc_lwm2m *lw, size_t i, estc_lwm2m_account *out)
{
    if (lw == NULL || out == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (i >= lw->n_acc)
        return ESTC_ERR_NOT_FOUND;
    out->instance = lw->acc[i].instance;
    out->server_uri = lw->acc[i].uri;
    out->bootstrap = lw->acc[i].bootstrap;
    out->security_mode = lw->acc[i].mode;
    out->short_server_id = lw->acc[i].ssid;
    return ESTC_OK;
}
