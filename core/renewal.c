/* SPDX-License-Identifier: Apache-2.0 */
/*
 * When to renew: the clock, the schedule's configuration, the renewal
 * formula, what was provisioned and when, and the deadline. Reading the
 * schedule changes nothing; the provisioning record has one owner here.
 */
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "client_internal.h"

#define DEFAULT_MARGIN (30 * 24 * 3600)

void estc_schedule_config_init(estc_schedule_config *cfg)
{
    if (cfg == NULL)
        return;
    *cfg = (estc_schedule_config){.enabled = true,
                                  .nominal_usage = 0.9,
                                  .max_margin_s = DEFAULT_MARGIN,
                                  .max_retries = 3,
                                  .retry_spacing_s = 60,
                                  .rekey = false};
}

static bool usage_ok(double u)
{
    return u > 0.0 && u <= 1.0;
}

estc_err estc_schedule_renewal_time(int64_t provisioned, int64_t not_before, int64_t not_after,
                                    double nominal_usage, int64_t max_margin_s, int64_t *out)
{
    if (out == NULL || not_after < not_before || !usage_ok(nominal_usage) || max_margin_s < 0)
        return ESTC_ERR_INVALID_ARG;
    /* A clock behind notBefore (or an unknown time) counts from notBefore;
     * one past notAfter makes the renewal due at once. */
    int64_t p = provisioned;
    if (p < not_before)
        p = not_before;
    if (p > not_after)
        p = not_after;
    /* Both terms in a range that cannot overflow: p <= not_after. */
    int64_t by_usage = p + (int64_t)(nominal_usage * (double)(not_after - p));
    int64_t by_margin =
        max_margin_s >= not_after - INT64_MIN / 2 ? INT64_MIN / 2 : not_after - max_margin_s;
    int64_t t = by_margin > by_usage ? by_margin : by_usage;
    *out = t > not_after ? not_after : t;
    return ESTC_OK;
}

const estc_schedule_config *estc__schedule_config(const estc_client *c, estc_schedule_config *tmp)
{
    if (c->sched_set)
        return &c->sched;
    estc_schedule_config_init(tmp);
    return tmp;
}

estc_err estc_client_set_schedule(estc_client *c, const estc_schedule_config *cfg)
{
    if (c == NULL || cfg == NULL || !usage_ok(cfg->nominal_usage) || cfg->max_margin_s < 0 ||
        cfg->retry_spacing_s < 1)
        return ESTC_ERR_INVALID_ARG;
    c->sched = *cfg;
    c->sched_set = true;
    return ESTC_OK;
}

estc_err estc_client_set_clock(estc_client *c, estc_clock_fn fn, void *arg)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    c->clock = fn;
    c->clock_arg = arg;
    return ESTC_OK;
}

int64_t estc_client_now(const estc_client *c)
{
    if (c == NULL)
        return 0;
    return c->clock != NULL ? c->clock(c->clock_arg) : (int64_t)time(NULL);
}

/* ---- the certificate the schedule refers to ------------------------------ */

static bool asn1_to_unix(const ASN1_TIME *t, int64_t *out)
{
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int days = 0, secs = 0;
    bool ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t) == 1;
    ASN1_TIME_free(epoch);
    if (ok)
        *out = (int64_t)days * 86400 + secs;
    return ok;
}

estc_err estc__cert_view_of(const estc_buf *der, X509 *x, struct estc__cert_view *cv)
{
    *cv = (struct estc__cert_view){0};
    unsigned mdlen = 0;
    bool ok = x != NULL && asn1_to_unix(X509_get0_notBefore(x), &cv->not_before) &&
              asn1_to_unix(X509_get0_notAfter(x), &cv->not_after) &&
              EVP_Digest(der->data, der->len, cv->hash, &mdlen, EVP_sha256(), NULL) == 1;
    if (!ok) {
        *cv = (struct estc__cert_view){0};
        return ESTC_ERR_FORMAT;
    }
    cv->have = true;
    return ESTC_OK;
}

estc_err estc__cert_view_parse(const estc_buf *der, struct estc__cert_view *cv)
{
    const unsigned char *p = der->data;
    X509 *x = d2i_X509(NULL, &p, (long)der->len);
    estc_err err = estc__cert_view_of(der, x, cv);
    X509_free(x);
    return err;
}

estc_err estc__cert_view_load(estc_client *c, estc_buf *der, struct estc__cert_view *cv)
{
    estc_buf got = {0};
    *cv = (struct estc__cert_view){0};
    /* Asked first, so that no certificate yet leaves the context's error
     * detail alone: a status read after a failed operation (the next
     * deadline for its log line) keeps that failure's detail. */
    bool have = true;
    if (estc_object_exists(c->ctx, c->cert_addr, ESTC_OBJ_CERT, &have) != ESTC_OK)
        have = true;
    if (!have)
        return ESTC_OK;
    estc_err err = estc_cert_load(c->ctx, c->cert_addr, &got);
    if (err == ESTC_ERR_NOT_FOUND) {
        estc_ctx_clear_error(c->ctx);
        return ESTC_OK;
    }
    if (err != ESTC_OK)
        return err;
    if (estc__cert_view_parse(&got, cv) != ESTC_OK) {
        estc_buf_free(&got);
        return estc_error(c->ctx, ESTC_ERR_FORMAT, "%s: not a certificate", c->cert_addr);
    }
    if (der != NULL) {
        estc_buf_free(der);
        *der = got;
    } else {
        estc_buf_free(&got);
    }
    return ESTC_OK;
}

/* ---- what was provisioned -------------------------------------------------- */

bool estc__cert_known(const estc_client *c, const struct estc__cert_view *cv)
{
    return cv->have && c->have_cert_hash && memcmp(cv->hash, c->cert_hash, sizeof(cv->hash)) == 0;
}

/* The one write of the provisioning record. */
static void set_provisioned(estc_client *c, const uint8_t *hash, int64_t when)
{
    c->have_cert_hash = hash != NULL;
    if (hash != NULL)
        memcpy(c->cert_hash, hash, sizeof(c->cert_hash));
    else
        memset(c->cert_hash, 0, sizeof(c->cert_hash));
    c->provisioned = when;
}

void estc__provisioned(estc_client *c, const struct estc__cert_view *cv, int64_t when)
{
    set_provisioned(c, cv->have ? cv->hash : NULL, when);
    c->failures = 0;
    c->fallback = false;
    c->retry_at = 0;
}

void estc__provisioned_restore(estc_client *c, const uint8_t *hash, int64_t when)
{
    set_provisioned(c, hash, when);
}

void estc__provisioned_forget(estc_client *c)
{
    set_provisioned(c, NULL, 0);
}

void estc__schedule_state(const estc_client *c, const struct estc__cert_view *cv, int64_t now,
                          struct estc__schedule_state *st)
{
    if (cv->have && !estc__cert_known(c, cv)) {
        /* Not seen before (not enrolled by this client, or replaced behind
         * its back): as if its period began now. */
        *st = (struct estc__schedule_state){.provisioned = now};
        return;
    }
    *st = (struct estc__schedule_state){.provisioned = c->provisioned,
                                        .failures = c->failures,
                                        .fallback = c->fallback,
                                        .retry_at = c->retry_at};
}

/* ---- the schedule's answers ------------------------------------------------- */

/* Renewal jitter (estc_client_set_renewal_jitter()): @t, the renewal time
 * of @cv provisioned at @p, moved earlier by an offset from the
 * certificate's hash, within the configured share. */
static int64_t jitter(const estc_client *c, int64_t p, const struct estc__cert_view *cv, int64_t t)
{
    if (c->jitter_share <= 0.0 || c->jitter_max_s <= 0 || !cv->have)
        return t;
    /* p as estc_schedule_renewal_time() clamps it. */
    if (p == 0 || p < cv->not_before)
        p = cv->not_before;
    if (p > cv->not_after)
        p = cv->not_after;
    if (t <= p)
        return t;
    double span = c->jitter_share * (double)(t - p);
    int64_t j = span >= (double)c->jitter_max_s ? c->jitter_max_s : (int64_t)span;
    if (j <= 0)
        return t;
    /* The certificate's hash: stable for it, different between devices. */
    uint64_t h = 0;
    for (size_t i = 0; i < 8; i++)
        h = (h << 8) | cv->hash[i];
    return t - (int64_t)(h % (uint64_t)j);
}

int64_t estc__renewal_time(const estc_client *c, int64_t provisioned,
                           const struct estc__cert_view *cv)
{
    estc_schedule_config tmp;
    const estc_schedule_config *cfg = estc__schedule_config(c, &tmp);
    int64_t t = cv->not_after;
    if (estc_schedule_renewal_time(provisioned, cv->not_before, cv->not_after, cfg->nominal_usage,
                                   cfg->max_margin_s, &t) != ESTC_OK)
        t = cv->not_before; /* a certificate that ends before it begins: now */
    else
        t = jitter(c, provisioned, cv, t);
    return t;
}

int64_t estc__deadline(const estc_client *c, const struct estc__cert_view *cv, int64_t now)
{
    estc_schedule_config tmp;
    const estc_schedule_config *cfg = estc__schedule_config(c, &tmp);
    struct estc__schedule_state st;
    estc__schedule_state(c, cv, now, &st);
    if (!cv->have || st.fallback || st.retry_at != 0 || c->crts_due)
        return st.retry_at != 0 ? st.retry_at : now;
    if (!cfg->enabled)
        return ESTC_NEVER;
    return estc__renewal_time(c, st.provisioned, cv);
}

estc_err estc_client_renewal_info(estc_client *c, int64_t *not_before, int64_t *not_after,
                                  int64_t *provisioned, int64_t *renewal, unsigned *failures)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    struct estc__cert_view cv;
    estc_err err = estc__cert_view_load(c, NULL, &cv);
    if (err != ESTC_OK)
        return err;
    if (!cv.have)
        return estc_error(c->ctx, ESTC_ERR_NOT_FOUND, "no certificate at %s", c->cert_addr);
    struct estc__schedule_state st;
    estc__schedule_state(c, &cv, estc_client_now(c), &st);
    if (not_before != NULL)
        *not_before = cv.not_before;
    if (not_after != NULL)
        *not_after = cv.not_after;
    if (provisioned != NULL)
        *provisioned = st.provisioned;
    if (renewal != NULL)
        *renewal = estc__renewal_time(c, st.provisioned, &cv);
    if (failures != NULL)
        *failures = st.failures;
    return ESTC_OK;
}

estc_err estc_client_next_deadline(estc_client *c, int64_t *when)
{
    if (c == NULL || when == NULL)
        return ESTC_ERR_INVALID_ARG;
    int64_t now = estc_client_now(c);
    struct estc__cert_view cv;
    estc_err err = estc__cert_view_load(c, NULL, &cv);
    if (err != ESTC_OK)
        return err;
    *when = estc__deadline(c, &cv, now);
    return ESTC_OK;
}
