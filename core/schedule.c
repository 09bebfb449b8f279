/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Automatic re-enrollment: the tick that a daemon loop calls, with retries
 * spread over the time left, the fallback to /sen, and the /crts policy.
 * When things are due is renewal.c's to say.
 */
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "client_internal.h"

estc_err estc_client_set_cacerts_policy(estc_client *c, estc_cacerts_policy policy,
                                        estc_trust_export_fn fn, void *arg)
{
    if (c == NULL || policy < ESTC_CACERTS_NEVER || policy > ESTC_CACERTS_GLOBAL ||
        (policy >= ESTC_CACERTS_EST_AND_BOOTSTRAP && fn == NULL))
        return ESTC_ERR_INVALID_ARG;
    c->policy = policy;
    c->policy_set = true;
    c->export_fn = fn;
    c->export_arg = arg;
    return ESTC_OK;
}

static estc_cacerts_policy policy(const estc_client *c)
{
    return c->policy_set ? c->policy : ESTC_CACERTS_EST;
}

estc_err estc_trust_export_file(void *arg, bool global, const estc_buf *certs, size_t n)
{
    (void)global;
    if (arg == NULL || (certs == NULL && n > 0))
        return ESTC_ERR_INVALID_ARG;
    BIO *bio = BIO_new(BIO_s_mem());
    estc_err err = bio == NULL ? ESTC_ERR_NOMEM : ESTC_OK;
    for (size_t i = 0; err == ESTC_OK && i < n; i++) {
        const unsigned char *p = certs[i].data;
        X509 *x = d2i_X509(NULL, &p, (long)certs[i].len);
        if (x == NULL || PEM_write_bio_X509(bio, x) != 1)
            err = ESTC_ERR_FORMAT;
        X509_free(x);
    }
    char *data = NULL;
    long len = err == ESTC_OK ? BIO_get_mem_data(bio, &data) : 0;
    if (err == ESTC_OK) {
        err = estc_file_write(NULL, arg, data, len > 0 ? (size_t)len : 0, 0644, ESTC_FILE_REPLACE);
        if (err != ESTC_OK && err != ESTC_ERR_NOMEM)
            err = ESTC_ERR_IO;
    }
    BIO_free(bio);
    return err;
}

/* ---- jitter ------------------------------------------------------------------ */

estc_err estc_client_set_renewal_jitter(estc_client *c, double share, int64_t max_s)
{
    if (c == NULL || !(share >= 0.0 && share <= 1.0) || max_s < 0)
        return ESTC_ERR_INVALID_ARG;
    c->jitter_share = share;
    c->jitter_max_s = max_s;
    return ESTC_OK;
}

/* ---- the tick ------------------------------------------------------------------ */

const char *estc_tick_result_name(estc_tick_result what)
{
    switch (what) {
    case ESTC_TICK_NOTHING:
        return "nothing";
    case ESTC_TICK_CACERTS:
        return "cacerts";
    case ESTC_TICK_CACERTS_FAILED:
        return "cacerts-failed";
    case ESTC_TICK_ENROLLED:
        return "enrolled";
    case ESTC_TICK_ENROLL_FAILED:
        return "enroll-failed";
    case ESTC_TICK_REENROLLED:
        return "reenrolled";
    case ESTC_TICK_RETRY_SCHEDULED:
        return "retry-scheduled";
    case ESTC_TICK_FALLBACK_ENROLLED:
        return "fallback-enrolled";
    case ESTC_TICK_FALLBACK_FAILED:
        return "fallback-failed";
    }
    return "unknown";
}

static estc_err do_cacerts(estc_client *c, int64_t now, const estc_schedule_config *cfg,
                           estc_tick_result *what)
{
    estc_err err = estc_client_cacerts(c);
    if (err == ESTC_OK && c->export_fn != NULL && policy(c) >= ESTC_CACERTS_EST_AND_BOOTSTRAP) {
        err = c->export_fn(c->export_arg, policy(c) == ESTC_CACERTS_GLOBAL, c->explicit_certs.items,
                           c->explicit_certs.n);
        if (err != ESTC_OK)
            err = estc_error(c->ctx, err, "/crts: the trust-store export failed");
    }
    if (err == ESTC_OK) {
        c->crts_due = false;
        c->retry_at = 0;
        *what = ESTC_TICK_CACERTS;
    } else {
        /* /crts and the export run again after the spacing. */
        c->crts_due = true;
        c->retry_at = now + cfg->retry_spacing_s;
        *what = ESTC_TICK_CACERTS_FAILED;
    }
    return err;
}

/* After a new certificate (its period began at the commit, with the
 * failures cleared): /crts when the policy says. */
static void renewed(estc_client *c)
{
    c->crts_due = policy(c) != ESTC_CACERTS_NEVER;
}

/* The tick's decisions for the enrolled certificate @cv (DER @der). */
static estc_err tick(estc_client *c, int64_t now, const estc_schedule_config *cfg,
                     const estc_buf *der, const struct estc__cert_view *cv, estc_tick_result *what)
{
    estc_err err;
    /* A certificate this client did not enroll (configured, or replaced
     * behind its back) begins its period when the schedule first sees it. */
    if (cv->have && !estc__cert_known(c, cv))
        estc__provisioned(c, cv, now);
    if (c->retry_at != 0 && now < c->retry_at)
        return ESTC_OK;

    if (!cv->have) {
        if (policy(c) != ESTC_CACERTS_NEVER && (!c->have_explicit || c->crts_due))
            return do_cacerts(c, now, cfg, what);
        err = estc_client_enroll(c);
        if (err == ESTC_OK) {
            renewed(c);
            c->crts_due = false; /* the CA set is fresh */
            *what = ESTC_TICK_ENROLLED;
        } else {
            /* Cancelled (estc_client_set_cancel) is no failure: still due. */
            if (err != ESTC_ERR_CANCELLED)
                c->retry_at = now + cfg->retry_spacing_s;
            *what = ESTC_TICK_ENROLL_FAILED;
        }
        return err;
    }

    bool due = c->fallback || c->retry_at != 0 ||
               (cfg->enabled && now >= estc__renewal_time(c, c->provisioned, cv));
    if (!due) {
        if (c->crts_due)
            return do_cacerts(c, now, cfg, what);
        return ESTC_OK;
    }
    /* An expired certificate cannot authenticate /sren: straight to /sen. */
    if (c->fallback || now >= cv->not_after || c->failures > cfg->max_retries) {
        estc_log(c->ctx, ESTC_LOG_INFO, "renewal: /sen with the bootstrap credentials");
        err = estc_client_enroll(c);
        if (err == ESTC_OK) {
            renewed(c);
            *what = ESTC_TICK_FALLBACK_ENROLLED;
        } else {
            c->fallback = true;
            if (err != ESTC_ERR_CANCELLED)
                c->retry_at = now + cfg->retry_spacing_s;
            *what = ESTC_TICK_FALLBACK_FAILED;
        }
        return err;
    }
    err = estc__client_reenroll_held(c, cfg->rekey, der);
    if (err == ESTC_OK) {
        renewed(c);
        *what = ESTC_TICK_REENROLLED;
        return ESTC_OK;
    }
    if (err == ESTC_ERR_CANCELLED) {
        *what = ESTC_TICK_RETRY_SCHEDULED; /* nothing counted: due again */
        return err;
    }
    c->failures++;
    if (c->failures > cfg->max_retries) {
        /* Retries used up: the fallback is due at once. */
        c->fallback = true;
        c->retry_at = now;
    } else {
        /* Spread what is left (the retries and the fallback) evenly over the
         * time until notAfter, never closer than the spacing. */
        int64_t left = (int64_t)(cfg->max_retries - c->failures) + 2;
        int64_t step = cv->not_after > now ? (cv->not_after - now) / left : 0;
        if (step < cfg->retry_spacing_s)
            step = cfg->retry_spacing_s;
        c->retry_at = now + step;
    }
    *what = ESTC_TICK_RETRY_SCHEDULED;
    return err;
}

/* Keeps a failed tick for estc_client_last_error() (a cancelled one is no
 * failure); a new certificate clears it. */
static void note_result(estc_client *c, int64_t now, estc_err err, estc_tick_result what)
{
    if (what == ESTC_TICK_ENROLLED || what == ESTC_TICK_REENROLLED ||
        what == ESTC_TICK_FALLBACK_ENROLLED) {
        c->last_error_at = 0;
        c->last_error = ESTC_OK;
        c->last_error_detail[0] = '\0';
        return;
    }
    if (err == ESTC_OK || err == ESTC_ERR_CANCELLED)
        return;
    c->last_error_at = now != 0 ? now : 1;
    c->last_error = err;
    estc_redact(estc_ctx_error_detail(c->ctx), c->last_error_detail, sizeof(c->last_error_detail));
}

estc_err estc_client_renew_now(estc_client *c)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (c->busy > 0)
        return estc_error(c->ctx, ESTC_ERR_STATE, "renew now: an operation is in flight");
    /* A due retry is what the tick takes as "renew now" (0 means none). */
    int64_t now = estc_client_now(c);
    c->retry_at = now > 0 ? now : 1;
    return ESTC_OK;
}

estc_err estc_client_tick(estc_client *c, estc_tick_result *what)
{
    if (c == NULL || what == NULL)
        return ESTC_ERR_INVALID_ARG;
    *what = ESTC_TICK_NOTHING;
    if (c->busy > 0)
        return estc_error(c->ctx, ESTC_ERR_STATE, "tick: an operation is in flight");
    int64_t now = estc_client_now(c);
    estc_schedule_config tmp;
    const estc_schedule_config *cfg = estc__schedule_config(c, &tmp);
    struct estc__cert_view cv;
    estc_buf der = {0}; /* the certificate, read once for the whole tick */
    estc_err err = estc__cert_view_load(c, &der, &cv);
    if (err == ESTC_OK)
        err = tick(c, now, cfg, &der, &cv, what);
    estc_buf_free(&der);
    note_result(c, now, err, *what);
    return err;
}

estc_err estc_client_last_error(estc_client *c, int64_t *when, estc_err *err, const char **detail)
{
    if (c == NULL)
        return ESTC_ERR_INVALID_ARG;
    if (c->last_error_at == 0)
        return ESTC_ERR_NOT_FOUND;
    if (when != NULL)
        *when = c->last_error_at;
    if (err != NULL)
        *err = c->last_error;
    if (detail != NULL)
        *detail = c->last_error_detail;
    return ESTC_OK;
}
